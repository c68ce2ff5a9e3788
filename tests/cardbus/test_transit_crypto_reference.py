"""The transit e-purse load cryptography (``cardbus.crypto.transit``) against a reference written
here from the module's own specification (PBOC-style load, double-length TDES, ISO/IEC 9797-1
MAC algorithm 3 with padding method 2): the reference uses ``cryptography``'s DES primitive
directly and shares no code with the module (nor with pyemv, which the module uses). The
boundaries of every field and the exact one-line errors are checked with literal values."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardbus.crypto import transit
from cardbus.errors import MacInvalid

H = bytes.fromhex
DLK = H("0123456789ABCDEFFEDCBA9876543210")
DTK = H("00112233445566778899AABBCCDDEEFF")
RANDOM = H("A1B2C3D4")
WHEN = "20261205103000"


def _ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key), modes.ECB())  # noqa: S305 - the reference's block primitive
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _parity(key: bytes) -> bytes:
    return bytes((b & 0xFE) | (bin(b & 0xFE).count("1") % 2 == 0) for b in key)


def ref_session_key(dlk: bytes, random: bytes, seq: int) -> bytes:
    r = random + bytes([seq >> 8, seq & 0xFF, 0x80, 0x00])
    return _parity(_ecb(dlk, r + bytes(0xFF - b for b in r)))


def ref_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (retail MAC), padding method 2, 4 bytes."""
    data += b"\x80" + bytes(-(len(data) + 1) % 8)
    k1, k2 = key[:8], key[8:]
    h = bytes(8)
    for i in range(0, len(data), 8):
        h = _ecb(k1, bytes(a ^ b for a, b in zip(h, data[i:i + 8], strict=True)))
    return _ecb(k1, _ecb(k2, h, decrypt=True))[:4]


def term(terminal_id: str) -> bytes:
    return hashlib.sha256(terminal_id.encode()).digest()[:6]


def test_session_key_mac1_mac2_and_tac_match_the_reference() -> None:
    for seq in (0, 1, 0x1234, 0xFFFF):
        sk = ref_session_key(DLK, RANDOM, seq)
        assert transit.session_load_key(DLK, RANDOM, seq) == sk
        mac1 = ref_mac(sk, (5000).to_bytes(4, "big") + (2000).to_bytes(4, "big") + b"\x02"
                       + term("T-1"))
        assert transit.card_load_mac1(DLK, RANDOM, seq, 5000, 2000, "T-1") == mac1
        transit.verify_card_mac1(DLK, RANDOM, seq, 5000, 2000, "T-1", mac1)
        mac2 = ref_mac(sk, (2000).to_bytes(4, "big") + b"\x02" + term("T-1") + H(WHEN))
        assert transit.operator_mac2(DLK, RANDOM, seq, 2000, "T-1", WHEN) == mac2
        transit.verify_operator_mac2(DLK, RANDOM, seq, 2000, "T-1", WHEN, mac2)
        tac = ref_mac(DTK, (7000).to_bytes(4, "big") + seq.to_bytes(2, "big")
                      + (2000).to_bytes(4, "big") + b"\x02" + term("T-1") + H(WHEN))
        assert transit.card_tac(DTK, 7000, seq, 2000, "T-1", WHEN) == tac
        transit.verify_card_tac(DTK, 7000, seq, 2000, "T-1", WHEN, tac)


def test_the_largest_balance_and_amount_fit_and_the_next_do_not() -> None:
    top = 2**32 - 1
    sk = ref_session_key(DLK, RANDOM, 7)
    assert transit.card_load_mac1(DLK, RANDOM, 7, top, top, "T") == ref_mac(
        sk, H("FFFFFFFF") * 2 + b"\x02" + term("T"))
    assert transit.card_load_mac1(DLK, RANDOM, 7, 0, 0, "T") == ref_mac(
        sk, bytes(8) + b"\x02" + term("T"))
    for kwargs, what in (({"balance": 2**32, "amount": 1}, "balance 4294967296"),
                         ({"balance": 1, "amount": 2**32}, "amount 4294967296"),
                         ({"balance": -1, "amount": 1}, "balance -1")):
        with pytest.raises(MacInvalid) as err:
            transit.card_load_mac1(DLK, RANDOM, 7, terminal_id="T", **kwargs)
        assert str(err.value) == f"{what} out of range"
    with pytest.raises(MacInvalid) as err:
        transit.operator_mac2(DLK, RANDOM, 7, 2**32, "T", WHEN)
    assert str(err.value) == "amount 4294967296 out of range"
    with pytest.raises(MacInvalid) as err:
        transit.card_tac(DTK, 2**32, 7, 1, "T", WHEN)
    assert str(err.value) == "balance 4294967296 out of range"
    with pytest.raises(MacInvalid) as err:
        transit.card_tac(DTK, 1, 7, 2**32, "T", WHEN)
    assert str(err.value) == "amount 4294967296 out of range"


@pytest.mark.parametrize(("random", "seq"), [(H("A1B2C3"), 1), (H("A1B2C3D4E5"), 1),
                                             (RANDOM, -1), (RANDOM, 0x10000)])
def test_a_bad_card_random_or_sequence_is_refused(random: bytes, seq: int) -> None:
    with pytest.raises(MacInvalid) as err:
        transit.session_load_key(DLK, random, seq)
    assert str(err.value) == "card random must be 4 bytes, online sequence 0..65535"


@pytest.mark.parametrize("when", ["2026120510300", "202612051030000", "2026120510300x"])
def test_a_bad_date_time_is_refused(when: str) -> None:
    with pytest.raises(MacInvalid) as err:
        transit.operator_mac2(DLK, RANDOM, 1, 100, "T", when)
    assert str(err.value) == "date-time must be YYYYMMDDhhmmss"


def test_each_verification_names_what_failed() -> None:
    for call, message in (
            (lambda: transit.verify_card_mac1(DLK, RANDOM, 1, 5, 5, "T", bytes(4)),
             "load MAC1 does not verify"),
            (lambda: transit.verify_operator_mac2(DLK, RANDOM, 1, 5, "T", WHEN, bytes(4)),
             "load MAC2 does not verify"),
            (lambda: transit.verify_card_tac(DTK, 5, 1, 5, "T", WHEN, bytes(4)),
             "load TAC does not verify")):
        with pytest.raises(MacInvalid) as err:
            call()
        assert str(err.value) == message


def test_probe_terminal_id_is_the_mac2_in_upper_case_hex() -> None:
    assert transit.probe_terminal_id(H("0a1b2c3d")) == "PROBE-0A1B2C3D"
    for bad in (H("0a1b2c"), H("0a1b2c3d4e")):
        with pytest.raises(MacInvalid) as err:
            transit.probe_terminal_id(bad)
        assert str(err.value) == "MAC2 must be 4 bytes"


def test_diversifier_is_sha256_reduced_to_16_digits() -> None:
    for token in ("tok-1", "tok-2", ""):
        n = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
        assert transit.diversifier(token) == f"{n % 10**16:016d}"
    # a token whose reduction is short still gives 16 digits (leading zeros kept)
    short = next(t for t in (f"t{i}" for i in range(100_000))
                 if int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") % 10**16
                 < 10**15)
    assert len(transit.diversifier(short)) == 16 and transit.diversifier(short)[0] == "0"


@pytest.fixture
def shanghai() -> Iterator[None]:
    """The process's local time zone is UTC+8 meanwhile (a terminal in China)."""
    import os

    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_card_time_is_utc_whatever_the_local_zone(shanghai: None) -> None:
    when = datetime(2026, 12, 5, 1, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert transit.card_time(when) == "20261205063000"
    assert transit.card_time(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "20261231235959"
