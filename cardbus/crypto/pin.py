"""PINs: ISO 9564 format 4 PIN blocks (AES), translation, verification (Visa PVV, IBM 3624),
and the translation to an ISO 9564 format 0 block under a TDES zone PIN key, for a bank host
that speaks classic ISO 8583 (DE 52).

The clear PIN exists only inside one call here: ``translate_pin_block`` deciphers under the
source key and enciphers under the destination key; ``verify_pin_pvv`` / ``verify_pin_offset``
decipher and compare. Nothing returns a PIN except ``make_pin_block``'s caller's own input.
"""

from __future__ import annotations

import hmac

from psec import des as _des
from psec import pin as _pin
from psec import pinblock as _pb

from cardbus.errors import KeyUsageError, PinBlockError

# IBM 3624 decimalisation table used by CardBus providers (the common "0123456789012345").
DECIMALISATION = "0123456789012345"


def _check_key(key: bytes) -> None:
    if len(key) not in (16, 24, 32):
        raise KeyUsageError("PIN block key must be an AES key")


def make_pin_block(pin_key: bytes, pin: str, pan: str) -> bytes:
    """ISO 9564-1 format 4 PIN block (16 bytes) for ``pin`` bound to ``pan``."""
    _check_key(pin_key)
    try:
        return _pb.encipher_pinblock_iso_4(pin_key, pin, pan)
    except ValueError as exc:
        raise PinBlockError(f"cannot make a PIN block: {_no_digits(exc)}") from None


def _no_digits(exc: Exception) -> str:
    # psec puts the PIN (or filler) into some messages: never let digits out.
    return "".join("#" if c.isdigit() else c for c in str(exc))


def _decipher(pin_key: bytes, pin_block: bytes, pan: str) -> str:
    _check_key(pin_key)
    if len(pin_block) != 16:
        raise PinBlockError(f"format 4 PIN block must be 16 bytes, got {len(pin_block)}")
    try:
        return _pb.decipher_pinblock_iso_4(pin_key, pin_block, pan)
    except ValueError as exc:
        raise PinBlockError(f"PIN block does not decipher: {_no_digits(exc)}") from None


def same_pin(key_a: bytes, block_a: bytes, key_b: bytes, block_b: bytes, pan: str) -> bool:
    """Whether two format 4 PIN blocks (under two keys, bound to ``pan``) hold the same PIN
    (the PIN never leaves this function: an auditor checks a translation with it)."""
    try:
        return hmac.compare_digest(_decipher(key_a, block_a, pan), _decipher(key_b, block_b, pan))
    except PinBlockError:
        return False


def translate_pin_block(src_key: bytes, dst_key: bytes, pin_block: bytes, pan: str) -> bytes:
    """Re-encipher a format 4 PIN block from ``src_key`` to ``dst_key`` in one call."""
    return make_pin_block(dst_key, _decipher(src_key, pin_block, pan), pan)


def translate_to_iso0(src_key: bytes, zpk: bytes, pin_block: bytes, pan: str) -> bytes:
    """A format 4 block under the AES ``src_key`` -> an ISO 9564 format 0 block (8 bytes)
    enciphered under the double-length TDES zone PIN key ``zpk`` (TDES-ECB, as DE 52 carries
    it), in one call: the PIN exists in clear only inside it."""
    if len(zpk) != 16:
        raise KeyUsageError("a zone PIN key must be a double-length TDES key")
    pin = _decipher(src_key, pin_block, pan)
    try:
        clear = _pb.encode_pinblock_iso_0(pin, pan)
    except ValueError as exc:
        raise PinBlockError(f"cannot make a format 0 PIN block: {_no_digits(exc)}") from None
    return _des.encrypt_tdes_ecb(zpk, clear)


def visa_pvv(pvk: bytes, pvki: str, pin: str, pan: str) -> str:
    """4-digit Visa PVV (issuance: computed once, stored per card; the PIN is not kept)."""
    try:
        return _pin.generate_visa_pvv(pvk, pvki, pin, pan)
    except ValueError as exc:
        raise PinBlockError(f"cannot compute PVV: {_no_digits(exc)}") from None


def ibm3624_offset(pvk: bytes, pin: str, pan: str) -> str:
    """IBM 3624 PIN offset (issuance); validation data = the PAN's last 16 digits ('F' pad)."""
    try:
        return _pin.generate_ibm3624_offset(pvk, DECIMALISATION, pin, pan, max(0, len(pan) - 16),
                                            min(16, len(pan)), "F")
    except ValueError as exc:
        raise PinBlockError(f"cannot compute PIN offset: {_no_digits(exc)}") from None


def verify_pin_pvv(pin_key: bytes, pin_block: bytes, pan: str, pvk: bytes, pvki: str,
                   stored_pvv: str) -> bool:
    """True if the PIN in ``pin_block`` matches ``stored_pvv``; ``PinBlockError`` if the block
    is bad. A wrong PIN is a ``False`` (a business decline), not an error."""
    pin = _decipher(pin_key, pin_block, pan)
    return hmac.compare_digest(visa_pvv(pvk, pvki, pin, pan), stored_pvv)


def verify_pin_offset(pin_key: bytes, pin_block: bytes, pan: str, pvk: bytes,
                      stored_offset: str) -> bool:
    """True if the PIN in ``pin_block`` matches ``stored_offset`` (IBM 3624)."""
    pin = _decipher(pin_key, pin_block, pan)
    if len(stored_offset) != len(pin):
        return False
    return hmac.compare_digest(ibm3624_offset(pvk, pin, pan), stored_offset)
