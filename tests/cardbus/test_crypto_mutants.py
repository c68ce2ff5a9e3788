"""Crypto edges the mutation run (``make mutation``) found untested: the longest PAN (19
digits, ISO/IEC 7812-1), the IBM 3624 validation data of a PAN longer than 16 digits, a stored
PIN offset of the wrong length, and the digit redaction of psec's error messages."""

from __future__ import annotations

import re

import pytest
from psec import pin as ppin
from psec import pinblock as ppb
from psec import tr31 as ptr31

from cardbus.crypto import pin, tr31
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.pan import valid_pan
from cardbus.crypto.tr31 import PROVISIONED
from cardbus.errors import KeyBlockHeaderMismatch, PinBlockError

PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # psec 1.3.0 pin docstring key
PAN19 = "1234567890123456789"  # 19 digits: the longest PAN ISO/IEC 7812-1 allows


@pytest.mark.parametrize(("pan", "ok"), [
    ("4111111111111111110", True),  # 19 digits, Luhn-valid: the upper bound is inclusive
    ("4111111111111111111", False),  # 19 digits, Luhn fails
])
def test_nineteen_digit_pans(pan: str, ok: bool) -> None:
    assert valid_pan(pan) is ok


def test_ibm3624_validation_data_is_the_last_16_pan_digits() -> None:
    """For a 19-digit PAN the offset covers digits 4..19 only: psec itself, given offset 3
    and length 16 with the decimalisation table 0123456789012345, is the reference."""
    want = ppin.generate_ibm3624_offset(PVK, "0123456789012345", "9876", PAN19, 3, 16, "F")
    assert pin.ibm3624_offset(PVK, "9876", PAN19) == want
    assert pin.ibm3624_offset(PVK, "9876", "999" + PAN19[3:]) == want


@pytest.mark.parametrize("stored", ["802", "80260", ""])
def test_pin_offset_of_another_length_never_matches(stored: str) -> None:
    """A stored offset shorter or longer than the PIN is bad data, never a match."""
    key = bytes(range(16))
    offset = pin.ibm3624_offset(PVK, "9876", PAN19)
    block = pin.make_pin_block(key, "9876", PAN19)
    assert pin.verify_pin_offset(key, block, PAN19, PVK, offset)
    assert not pin.verify_pin_offset(key, block, PAN19, PVK, stored)


def test_psec_error_messages_keep_their_words_but_lose_their_digits() -> None:
    key = bytes(range(16))
    with pytest.raises(ValueError) as direct:
        ppb.encipher_pinblock_iso_4(key, "12", PAN19[:16])
    with pytest.raises(PinBlockError) as wrapped:
        pin.make_pin_block(key, "12", PAN19[:16])
    assert re.search(r"\d", str(direct.value))  # psec's own message names the lengths
    assert str(wrapped.value) == "cannot make a PIN block: " + re.sub(r"\d", "#",
                                                                      str(direct.value))


@pytest.mark.parametrize("size", [16, 24])
def test_tr31_accepts_aes128_and_aes192_kbpks(size: int) -> None:
    """ANSI X9.143 version D allows AES-128, -192 and -256 KBPKs; a block made by psec under
    an AES-128 or AES-192 KBPK opens."""
    kbpk = bytes(range(size))
    block = ptr31.wrap(kbpk, PROVISIONED[KeyUsage.PIN_ENC].header(), bytes(range(100, 116)))
    assert tr31.unwrap_key_block(kbpk, block, KeyUsage.PIN_ENC) == (bytes(range(100, 116)),
                                                                    "00")


def test_tr31_header_mismatch_names_both_headers() -> None:
    """The operator sees what came and what was expected."""
    kbpk = bytes(range(32))
    block = tr31.wrap_key_block(kbpk, KeyUsage.PAN_ENC, bytes(range(32)))
    with pytest.raises(KeyBlockHeaderMismatch) as err:
        tr31.unwrap_key_block(kbpk, block, KeyUsage.PIN_ENC)
    assert "D0/A/E/N" in str(err.value) and "(P0/A/E/N)" in str(err.value)
