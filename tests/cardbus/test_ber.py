"""BER-TLV framing shared by the EMV dialogue and GlobalPlatform (ISO/IEC 8825-1; EMV Book 3
Annex B for the tag and length forms and the 00/FF padding between TLVs; the CDOL below is a
common CDOL1 prefix: amount 9F02, country 9F1A, TVR 95, currency 5F2A)."""

from __future__ import annotations

import pytest

from cardbus import ber
from cardbus.emv import tlv
from cardbus.errors import CardError
from cardbus.gp import ber as gp_ber


def test_lengths_short_one_and_two_byte_forms() -> None:
    assert ber.encode_length(0x7F) == b"\x7f"
    assert ber.encode_length(0x80) == b"\x81\x80"
    assert ber.encode_length(0xFF) == b"\x81\xff"
    assert ber.encode_length(0x100) == b"\x82\x01\x00"
    assert ber.encode_length(0xFFFF) == b"\x82\xff\xff"
    with pytest.raises(CardError):
        ber.encode_length(0x10000)


def test_multi_byte_tags_and_long_lengths_round_trip() -> None:
    value = bytes(range(200))
    data = gp_ber.tlv(0x9F70, b"\x07") + gp_ber.tlv(0xBF0C, value) + gp_ber.tlv(0x4F, b"\xa0")
    assert gp_ber.parse(data) == [(0x9F70, b"\x07"), (0xBF0C, value), (0x4F, b"\xa0")]
    assert tlv.parse(data) == [("9F70", b"\x07"), ("BF0C", value), ("4F", b"\xa0")]
    assert ber.read_tag(bytes.fromhex("DF8101"), 0) == 3  # three-byte tag


def test_emv_skips_padding_and_gp_does_not() -> None:
    data = bytes.fromhex("00FF") + tlv.tlv("9F36", b"\x00\x01") + b"\x00"
    assert tlv.parse(data) == [("9F36", b"\x00\x01")]
    with pytest.raises(CardError):
        gp_ber.parse(data)


@pytest.mark.parametrize("data", [
    bytes.fromhex("9F"),            # tag cut inside
    bytes.fromhex("9F36"),          # no length
    bytes.fromhex("5A0812"),        # value runs past the end
    bytes.fromhex("5A8301000000"),  # three-byte length: not allowed
    bytes.fromhex("5A80"),          # indefinite length: not allowed
])
def test_malformed_framing_is_a_card_error(data: bytes) -> None:
    with pytest.raises(CardError):
        ber.parse_raw(data)


def test_dol_reads_multi_byte_tags() -> None:
    assert tlv.dol(bytes.fromhex("9F02069F1A0295055F2A02")) == [
        ("9F02", 6), ("9F1A", 2), ("95", 5), ("5F2A", 2)]
    with pytest.raises(CardError):
        tlv.dol(bytes.fromhex("9F02069F"))
