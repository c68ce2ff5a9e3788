"""Edges of the crypto core with literal values: what every check refuses, and that each
input of a cryptogram counts (mutation testing showed what no test pinned)."""

from __future__ import annotations

import pytest

from cardbus.crypto import emv
from cardbus.crypto.cache import ExpiringCache
from cardbus.crypto.keys import KeyAlg, new_key
from cardbus.crypto.pan import PanCipher, reencrypt_pan, valid_pan
from cardbus.errors import CryptogramInvalid, UnwrapError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN, PSN, ATC = "4111111111111111", "01", 0x0102
ARQC = bytes.fromhex("1122334455667788")


def session_key() -> bytes:
    return emv.derive_session_key(emv.derive_icc_master_key(IMK, PAN, PSN), ATC)


@pytest.mark.parametrize(("kw", "message"), [
    ({"unpredictable_number": b"\x01\x02\x03"}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"unpredictable_number": b"\x01\x02\x03\x04\x05"}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"tvr": bytes(4)}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"tvr": bytes(6)}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"aip": b"\x58"}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"aip": b"\x58\x00\x00"}, "UN must be 4 bytes, TVR 5, AIP 2"),
    ({"date": "26112"}, "date must be YYMMDD"),
    ({"date": "2611255"}, "date must be YYMMDD"),
    ({"date": "26112A"}, "date must be YYMMDD"),
])
def test_arqc_data_refuses_a_malformed_field(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"amount": 1, "currency_code": 156, "country_code": 156,
                               "date": "261125", "unpredictable_number": bytes(4), "atc": 1}
    with pytest.raises(CryptogramInvalid, match=message):
        emv.arqc_data(**{**args, **kw})  # type: ignore[arg-type]


def test_arqc_data_defaults_are_no_tvr_purchase_and_the_cardbus_aip() -> None:
    data = emv.arqc_data(amount=1, currency_code=156, country_code=156, date="261125",
                         unpredictable_number=bytes(4), atc=1)
    assert data.hex().upper() == ("000000000001" "000000000000" "0156" "0000000000" "0156"
                                  "261125" "00" "00000000" "5800" "0001")


def test_verify_card_arqc_uses_the_psn_and_returns_the_session_key() -> None:
    data = bytes(33)
    sk = session_key()
    arqc = emv.generate_arqc(sk, data)
    assert emv.verify_card_arqc(IMK, PAN, PSN, ATC, data, arqc) == sk
    with pytest.raises(CryptogramInvalid, match="ARQC does not verify"):
        emv.verify_card_arqc(IMK, PAN, "00", ATC, data, arqc)  # another PSN, another card key


def test_arpc_method1_is_checked_whole_by_the_card() -> None:
    sk = session_key()
    arpc = emv.generate_arpc_method1(sk, ARQC, b"00")
    emv.verify_arpc_method1(sk, ARQC, b"00", arpc)
    with pytest.raises(CryptogramInvalid, match=r"ARPC \(method 1\) does not verify"):
        emv.verify_arpc_method1(sk, ARQC, b"05", arpc)  # another response code
    last = arpc[:-1] + bytes([arpc[-1] ^ 1])
    with pytest.raises(CryptogramInvalid, match=r"ARPC \(method 1\) does not verify"):
        emv.verify_arpc_method1(sk, ARQC, b"00", last)


def test_arpc_method2_covers_the_proprietary_data() -> None:
    sk, csu = session_key(), bytes.fromhex("00000000")
    plain = emv.generate_arpc_method2(sk, ARQC, csu)
    with_data = emv.generate_arpc_method2(sk, ARQC, csu, b"\x01\x02")
    assert len(plain) == 4 and plain != with_data
    emv.verify_arpc_method2(sk, ARQC, csu, with_data, b"\x01\x02")
    with pytest.raises(CryptogramInvalid, match=r"ARPC \(method 2\) does not verify"):
        emv.verify_arpc_method2(sk, ARQC, csu, with_data)  # without the data it covers
    with pytest.raises(CryptogramInvalid, match=r"ARPC \(method 2\) does not verify"):
        emv.verify_arpc_method2(sk, ARQC, bytes.fromhex("00000001"), plain)


@pytest.mark.parametrize(("pan", "ok"), [
    ("4111111111111111", True), ("123456789015", True),  # 16 and 12 digits, Luhn-valid
    ("12345678903", False),  # 11 digits
    ("41111111111111111115", False),  # 20 digits
    ("4111111111111112", False),  # Luhn fails
    ("4111 1111 1111 1111", False), ("", False),
])
def test_valid_pan(pan: str, ok: bool) -> None:
    assert valid_pan(pan) is ok


def test_reencrypt_keeps_the_context_unless_told_another() -> None:
    src = PanCipher("pan:a.v1", new_key(KeyAlg.AES, 32))
    dst = PanCipher("pan:b.v1", new_key(KeyAlg.AES, 32))
    blob = src.encrypt(PAN, "pay-1")
    assert dst.decrypt(reencrypt_pan(src, dst, blob, "pay-1"), "pay-1") == PAN
    moved = reencrypt_pan(src, dst, blob, "pay-1", dst_context="pay-2")
    assert dst.decrypt(moved, "pay-2") == PAN
    with pytest.raises(UnwrapError):
        dst.decrypt(moved, "pay-1")


def test_a_popped_entry_is_gone_and_popping_nothing_is_fine() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(ttl=10)
    cache.put("a", 1)
    cache.pop("a")
    cache.pop("never")
    assert cache.get("a") is None and len(cache) == 0
