"""EMV, key and TR-31 helpers at their edges: the ATC's whole range (0 and FFFF taken, one past
refused), each refusal's exact one-line reason, DES key parity on every byte value, the key check
values of three-key TDES and HMAC keys against references computed here with cryptography and
hmac directly, and the TR-31 usages that are not provisioned by key block."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardbus.crypto import emv, tr31
from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv, new_key
from cardbus.errors import AtcReplayed, CryptogramInvalid, KeyBlockError, KeyUsageError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "6222021234567890"
DATA = bytes(29)

# -- EMV ---------------------------------------------------------------------------------------


def test_the_atc_takes_0_to_ffff_and_nothing_else() -> None:
    icc = emv.derive_icc_master_key(IMK, PAN)
    first, last = emv.derive_session_key(icc, 0), emv.derive_session_key(icc, 0xFFFF)
    assert len(first) == len(last) == 16 and first != last
    for atc in (-1, 0x10000):
        with pytest.raises(CryptogramInvalid) as exc:
            emv.derive_session_key(icc, atc)
        assert str(exc.value) == f"ATC {atc} is out of range"


def test_emv_refusals_say_why() -> None:
    sk = emv.derive_session_key(emv.derive_icc_master_key(IMK, PAN), 1)
    arqc = emv.generate_arqc(sk, DATA)
    with pytest.raises(CryptogramInvalid) as short:
        emv.verify_arqc(sk, DATA, arqc[:7])
    assert str(short.value) == "ARQC must be 8 bytes"
    with pytest.raises(CryptogramInvalid) as wrong:
        emv.verify_arqc(sk, DATA, bytes(8))
    assert str(wrong.value) == "ARQC does not verify"
    with pytest.raises(AtcReplayed) as replay:
        emv.check_atc(5, 5)
    assert str(replay.value) == "ATC 5 is not above the last seen ATC 5"
    with pytest.raises(CryptogramInvalid) as m1:
        emv.verify_arpc_method1(sk, arqc, b"00", bytes(8))
    assert str(m1.value) == "ARPC (method 1) does not verify"
    with pytest.raises(CryptogramInvalid) as m2:
        emv.verify_arpc_method2(sk, arqc, bytes(4), bytes(4))
    assert str(m2.value) == "ARPC (method 2) does not verify"
    fields = {"amount": 100, "currency_code": 156, "country_code": 156, "date": "261125",
              "unpredictable_number": bytes(4), "atc": 1}
    with pytest.raises(CryptogramInvalid) as un:
        emv.arqc_data(**{**fields, "unpredictable_number": bytes(3)})  # type: ignore[arg-type]
    assert str(un.value) == "UN must be 4 bytes, TVR 5, AIP 2"
    with pytest.raises(CryptogramInvalid) as date:
        emv.arqc_data(**{**fields, "date": "2611"})  # type: ignore[arg-type]
    assert str(date.value) == "date must be YYMMDD"


# -- keys --------------------------------------------------------------------------------------


def test_tdes_keys_get_odd_parity_on_every_byte_and_other_keys_stay_raw(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With every byte value as the random input: each DES key byte keeps its top seven bits
    and gets the low bit that makes its number of set bits odd (FIPS 46-3)."""
    monkeypatch.setattr(os, "urandom", lambda n: bytes(i % 256 for i in range(n)))
    raw = bytes(range(256))
    tdes = new_key(KeyAlg.TDES, 256)
    for r, b in zip(raw, tdes, strict=True):
        assert b >> 1 == r >> 1 and bin(b).count("1") % 2 == 1, (r, b)
    assert new_key(KeyAlg.AES, 32) == raw[:32]


def _tdes_kcv(key: bytes) -> str:
    enc = Cipher(TripleDES(key), modes.ECB()).encryptor()  # noqa: S305 - KCV is ECB by definition
    return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()


def test_kcv_of_a_three_key_tdes_key_and_of_an_hmac_key() -> None:
    k24 = bytes.fromhex("0123456789ABCDEFFEDCBA987654321089ABCDEF01234567")
    assert kcv(k24, KeyAlg.TDES) == _tdes_kcv(k24)
    k32 = bytes(range(32))
    assert kcv(k32, KeyAlg.HMAC) == "FF9212"
    assert kcv(k32, KeyAlg.HMAC) == hmac.new(k32, bytes(16), hashlib.sha256).digest()[:3].hex(
    ).upper()


# -- TR-31 -------------------------------------------------------------------------------------


def test_tr31_refusals_say_why() -> None:
    kbpk = bytes(range(32))
    with pytest.raises(KeyUsageError) as usage:
        tr31.wrap_key_block(kbpk, KeyUsage.MAC, bytes(32))
    assert str(usage.value) == "keys of usage mac are not provisioned by key block"
    with pytest.raises(KeyUsageError) as short:
        tr31.wrap_key_block(bytes(20), KeyUsage.PIN_ENC, bytes(32))
    assert str(short.value) == "a version D KBPK must be an AES key"
    with pytest.raises(KeyBlockError) as version:
        tr31.wrap_key_block(kbpk, KeyUsage.PIN_ENC, bytes(32), version_num="ABC")
    assert str(version.value) == \
        "cannot wrap key block: Number of blocks (N0) is invalid. Expecting 2 digits."
    block = tr31.wrap_key_block(kbpk, KeyUsage.PIN_ENC, bytes(range(32)))
    with pytest.raises(KeyBlockError) as other:
        tr31.unwrap_key_block(bytes(range(1, 33)), block, KeyUsage.PIN_ENC)
    assert str(other.value) == "key block does not open: Key block MAC doesn't match generated MAC."
    with pytest.raises(KeyBlockError) as not_d:
        tr31.unwrap_key_block(kbpk, "B" + block[1:], KeyUsage.PIN_ENC)
    assert str(not_d.value) == "only TR-31 version D (AES key derivation) blocks are accepted"
