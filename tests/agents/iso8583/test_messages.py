"""The bridge's pure parts: the field spec, message building and reading, code mapping, the
PIN translation to the host's zone key, masking of host frames. No host, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import iso8583.specs
import pytest
from psec import des, pinblock
from pyemv import tlv

from agents.providers.iso8583 import fields, messages
from agents.providers.iso8583.bridge import masked_frame
from cardbus.crypto import pin
from cardbus.crypto.keys import KeyAlg, new_key
from cardbus.errors import DecodeError, KeyUsageError
from cardbus.response_codes import (
    APPROVED,
    DO_NOT_HONOUR,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    LOST_CARD,
    STOLEN_CARD,
)
from tests.agents.iso8583.bank import IsoBank

SENT = datetime(2026, 12, 4, 9, 5, 7, tzinfo=UTC)


def test_spec_is_pyiso8583s_1987_layout_for_every_field_it_declares() -> None:
    default = iso8583.specs.default
    for key, field in fields.SPEC.items():
        ours = {k: v for k, v in field.items() if k != "desc"}
        theirs = {k: v for k, v in default[key].items() if k != "desc"}
        if key == "54":  # jPOS's IFA_LLLCHAR(120) on the host side; pyiso8583 allows 240
            theirs["max_len"] = 120
        assert ours == theirs, key


def test_echo_round_trips_and_is_framed_with_its_length() -> None:
    doc = messages.network(messages.ECHO, stan="000042", sent_at=SENT)
    raw = fields.encode(doc)
    assert fields.decode(raw) == doc == {"t": "0800", "7": "1204090507", "11": "000042",
                                         "70": "301"}
    framed = fields.frame(raw)
    assert framed[:2] == len(raw).to_bytes(2, "big") and framed[2:] == raw


@pytest.mark.parametrize("raw", [
    b"011",  # shorter than an MTI
    b"0110" + bytes([0x40, 0, 0, 0, 0, 0x20, 0, 0]) + b"ZZ",  # bitmap: DE 2 and 39, body not
    b"0110" + bytes([0, 0, 0, 0, 0, 0, 0, 1]) + b"1",  # DE 64: not in the spec
    b"0110" + bytes([0x80, 0, 0, 0, 0, 0, 0, 0]),  # secondary bitmap announced, missing
])
def test_malformed_frames_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        fields.decode(raw)


def test_authorization_carries_the_card_as_tags_and_reversal_points_at_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bank = IsoBank(tmp_path)
    card = bank.issue(balance=5_000)
    req = bank.request(card, 1_234)
    doc = messages.authorization(req, pan=card.profile.pan, pin_block=bytes(8), stan="000007",
                                 sent_at=SENT)
    decoded = fields.decode(fields.encode(doc))
    assert decoded["2"] == card.profile.pan and decoded["4"] == "000000001234"
    assert decoded["49"] == "156" and decoded["22"] == "071" and len(decoded["41"]) == 8
    tags = tlv.decode(bytes.fromhex(decoded["55"]))
    rebuilt = b"".join(tags[t] for t, _ in messages.CDOL1_LAYOUT)
    assert rebuilt.hex().upper() == req.card.cdol_data.upper()
    assert tags["9F26"].hex().upper() == req.card.arqc.upper()
    rev = messages.reversal(decoded, stan="000008", repeat=True)
    assert rev["t"] == "0401" and rev["11"] == "000008" and rev["2"] == card.profile.pan
    assert rev["90"] == "0100" + "000007" + "1204090507" + "0" * 22
    assert messages.matching_key(rev)[1] == decoded["41"]


def test_host_codes_map_to_cardbus_codes() -> None:
    assert messages.map_code("00") == APPROVED
    assert messages.map_code("51") == INSUFFICIENT_FUNDS
    assert messages.map_code("55") == INCORRECT_PIN
    assert (messages.map_code("41"), messages.map_code("43")) == (LOST_CARD, STOLEN_CARD)
    assert messages.map_code("Q7") == DO_NOT_HONOUR  # unknown: do not honour


def test_read_answer_takes_the_arpc_from_tag_91_and_refuses_an_approval_without_auth() -> None:
    arpc, arc = bytes.fromhex("0123456789ABCDEF"), b"00"
    ok = messages.read_answer({"t": "0110", "39": "00", "38": "A00001",
                               "55": tlv.encode({"91": arpc + arc}).hex()})
    assert ok.approved and ok.auth_code == "A00001" and ok.arpc == "0123456789ABCDEF"
    declined = messages.read_answer({"t": "0110", "39": "51"})
    assert not declined.approved and declined.auth_code is None and declined.arpc is None
    with pytest.raises(DecodeError):
        messages.read_answer({"t": "0110", "39": "00"})
    with pytest.raises(DecodeError):
        messages.read_answer({"t": "0810", "39": "00"})


def test_terminal_field_is_eight_characters_and_stable() -> None:
    assert messages.terminal_field("T1") == "T1      "
    long = messages.terminal_field("T-ISO-TERMINAL-0001")
    assert len(long) == 8 and long == messages.terminal_field("T-ISO-TERMINAL-0001")


def test_iso0_clear_block_matches_the_published_example() -> None:
    # ISO 9564-1 format 0 worked example (PIN 1234, PAN 43219876543210987 -> 0412AC89ABCDEF67),
    # as given in the ISO 9564 article of Wikipedia and in EFTlab's PIN block reference.
    assert pinblock.encode_pinblock_iso_0("1234", "43219876543210987").hex().upper() == (
        "0412AC89ABCDEF67")


def test_pin_translation_to_the_zone_key_keeps_the_pin() -> None:
    pan = "43219876543210987"
    src, zpk = new_key(KeyAlg.AES), new_key(KeyAlg.TDES)
    block4 = pin.make_pin_block(src, "1234", pan)
    block0 = pin.translate_to_iso0(src, zpk, block4, pan)
    clear = des.decrypt_tdes_ecb(zpk, block0)
    assert clear.hex().upper() == "0412AC89ABCDEF67"
    assert pinblock.decode_pinblock_iso_0(clear, pan) == "1234"
    with pytest.raises(KeyUsageError):
        pin.translate_to_iso0(src, new_key(KeyAlg.AES), block4, pan)


def test_host_frames_are_masked_before_a_dead_letter() -> None:
    raw = b"0110\x40\x00" + b"164321987654321098" + b"\x01" + b"00"
    assert masked_frame(raw) == b"0110\x40\x00" + b"*" * 18 + b"\x01" + b"00"
