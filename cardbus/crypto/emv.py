"""EMV-style card cryptography (TDES, as pyemv implements it; EMV Book 2 Annex A).

Card side: ``derive_icc_master_key`` (option A), ``derive_session_key`` (common session key
from the ATC), ``generate_arqc``, and the card's check of the ARPC (``verify_arpc_*``).
Issuer side: ``verify_arqc`` (recompute, constant-time compare), ``check_atc`` (replay) and
``generate_arpc_method1`` / ``generate_arpc_method2``.
"""

from __future__ import annotations

import hmac

from pyemv import ac, kd

from cardbus.errors import AtcReplayed, CryptogramInvalid, KeyUsageError

ATC_MAX = 0xFFFF


def _atc_bytes(atc: int) -> bytes:
    if not 0 <= atc <= ATC_MAX:
        raise CryptogramInvalid(f"ATC {atc} is out of range")
    return atc.to_bytes(2, "big")


def derive_icc_master_key(imk: bytes, pan: str, psn: str = "00") -> bytes:
    """ICC master key from the issuer master key, PAN and PAN sequence number (option A)."""
    if len(imk) != 16:
        raise KeyUsageError("issuer master key must be a double-length TDES key")
    if not pan.isdigit() or len(psn) != 2 or not psn.isdigit():
        raise CryptogramInvalid("PAN and PSN must be digits (PSN two digits)")
    return kd.derive_icc_mk_a(imk, pan, psn)


def derive_session_key(icc_mk: bytes, atc: int) -> bytes:
    """Common session key for AC: R = ATC || 00 00 00 00 00 00 (EMV Book 2 A1.3.1)."""
    return kd.derive_common_sk(icc_mk, _atc_bytes(atc) + bytes(6))


def generate_arqc(session_key: bytes, data: bytes) -> bytes:
    """8-byte application cryptogram (ARQC, TC, AAC): ISO 9797-1 MAC alg. 3, EMV padding."""
    return ac.generate_ac(session_key, data)


def verify_arqc(session_key: bytes, data: bytes, arqc: bytes) -> None:
    """Raise ``CryptogramInvalid`` unless ``arqc`` is the cryptogram over ``data``."""
    if len(arqc) != 8:
        raise CryptogramInvalid("ARQC must be 8 bytes")
    if not hmac.compare_digest(generate_arqc(session_key, data), arqc):
        raise CryptogramInvalid("ARQC does not verify")


def verify_card_arqc(imk: bytes, pan: str, psn: str, atc: int, data: bytes, arqc: bytes) -> bytes:
    """Issuer check: derive ICC MK and session key, verify the ARQC; returns the session key
    (for the ARPC)."""
    sk = derive_session_key(derive_icc_master_key(imk, pan, psn), atc)
    verify_arqc(sk, data, arqc)
    return sk


def check_atc(atc: int, last_atc: int | None) -> None:
    """Raise ``AtcReplayed`` unless ``atc`` is above the last ATC seen for the card."""
    _atc_bytes(atc)
    if last_atc is not None and atc <= last_atc:
        raise AtcReplayed(f"ATC {atc} is not above the last seen ATC {last_atc}")


def generate_arpc_method1(session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1: 8 bytes, TDES(SK, ARQC xor (ARC || 00..))."""
    return ac.generate_arpc_1(session_key, arqc, arc)


def generate_arpc_method2(session_key: bytes, arqc: bytes, csu: bytes,
                          prop_auth_data: bytes = b"") -> bytes:
    """ARPC method 2: 4 bytes, MAC over ARQC || CSU || proprietary data."""
    return ac.generate_arpc_2(session_key, arqc, csu, prop_auth_data or None)


def verify_arpc_method1(session_key: bytes, arqc: bytes, arc: bytes, arpc: bytes) -> None:
    """Card side: raise ``CryptogramInvalid`` unless the issuer's ARPC (method 1) is right."""
    if not hmac.compare_digest(generate_arpc_method1(session_key, arqc, arc), arpc):
        raise CryptogramInvalid("ARPC (method 1) does not verify")


def verify_arpc_method2(session_key: bytes, arqc: bytes, csu: bytes, arpc: bytes,
                        prop_auth_data: bytes = b"") -> None:
    """Card side: raise ``CryptogramInvalid`` unless the issuer's ARPC (method 2) is right."""
    expected = generate_arpc_method2(session_key, arqc, csu, prop_auth_data)
    if not hmac.compare_digest(expected, arpc):
        raise CryptogramInvalid("ARPC (method 2) does not verify")


def arqc_data(*, amount: int, currency_code: int, country_code: int, date: str,
              unpredictable_number: bytes, atc: int, amount_other: int = 0,
              tvr: bytes = bytes(5), tx_type: int = 0, aip: bytes = b"\x58\x00") -> bytes:
    """The recommended CDOL1 data (EMV Book 2 8.1.1), in order: 9F02 9F03 9F1A 95 5F2A 9A 9C
    9F37 82 9F36. ``date`` is YYMMDD; amounts are minor units (BCD, 12 digits)."""
    if len(unpredictable_number) != 4 or len(tvr) != 5 or len(aip) != 2:
        raise CryptogramInvalid("UN must be 4 bytes, TVR 5, AIP 2")
    if len(date) != 6 or not date.isdigit():
        raise CryptogramInvalid("date must be YYMMDD")
    return (
        bytes.fromhex(f"{amount:012d}") + bytes.fromhex(f"{amount_other:012d}")
        + bytes.fromhex(f"{country_code:04d}") + tvr + bytes.fromhex(f"{currency_code:04d}")
        + bytes.fromhex(date) + bytes([tx_type]) + unpredictable_number + aip + _atc_bytes(atc)
    )
