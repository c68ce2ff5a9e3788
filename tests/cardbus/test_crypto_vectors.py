"""Published test vectors for every primitive the crypto core builds on. Sources are cited
per test; none of these values was produced by the code under test."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cardbus.crypto import emv, pin, tr31
from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv
from cardbus.crypto.signing import Signer, Verifier
from cardbus.errors import KeyBlockHeaderMismatch


# --- RFC 8032 section 7.1, Ed25519 TEST 1 and TEST 2 ---------------------------------------
@pytest.mark.parametrize(
    ("secret", "public", "message", "signature"),
    [
        (  # RFC 8032 7.1 TEST 1 (empty message)
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (  # RFC 8032 7.1 TEST 2 (one byte 0x72)
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ],
)
def test_ed25519_rfc8032(secret: str, public: str, message: str, signature: str) -> None:
    signer = Signer("k", bytes.fromhex(secret))
    assert signer.public_bytes().hex() == public
    assert signer.sign(bytes.fromhex(message)).hex() == signature
    Verifier("k", bytes.fromhex(public)).verify(bytes.fromhex(signature), bytes.fromhex(message))


def test_hkdf_sha256_rfc5869_case1() -> None:
    # RFC 5869 Appendix A.1, Test Case 1 (the KDF wrap.py uses for terminal key delivery)
    okm = HKDF(algorithm=hashes.SHA256(), length=42, salt=bytes(range(13)),
               info=bytes(range(0xF0, 0xFA))).derive(b"\x0b" * 22)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


# --- EMV: pyemv's documented examples (pyemv 1.5.0 kd.py / ac.py docstrings, which follow
# EMV 4.3 Book 2 Annex A1.3-A1.4 and section 8.2) ------------------------------------------
MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_icc_master_key_option_a_pyemv_example() -> None:
    # pyemv kd.derive_icc_mk_a docstring: PAN 12345678901234567, PSN 01
    assert emv.derive_icc_master_key(MK, "12345678901234567", "01").hex().upper() == \
        "73AD54688CEF2934B0979857E3C719F1"


def test_common_session_key_pyemv_example() -> None:
    # pyemv kd.derive_common_sk docstring: R = 001C000000000000, i.e. ATC 0x001C
    assert emv.derive_session_key(MK, 0x001C).hex().upper() == "E9FB384AF807B940FEDCEA613461B0C4"


SK_AC = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")


def test_arqc_pyemv_example() -> None:
    # pyemv ac.generate_ac docstring (EMV Book 2 8.1.1 recommended data elements)
    data = emv.arqc_data(amount=2000, amount_other=0, country_code=124,
                         tvr=bytes.fromhex("0000008000"), currency_code=124, date="110309",
                         tx_type=0, unpredictable_number=bytes.fromhex("3804823E"),
                         aip=bytes.fromhex("5800"), atc=1)
    assert data.hex().upper() == ("000000002000000000000000012400000080000124110309003804823E"
                                  "58000001")
    assert emv.generate_arqc(SK_AC, data).hex().upper() == "3B76CF10FECD8789"
    emv.verify_arqc(SK_AC, data, bytes.fromhex("3B76CF10FECD8789"))


def test_arpc_methods_pyemv_examples() -> None:
    arqc = bytes.fromhex("1234567890ABCDEF")
    # pyemv ac.generate_arpc_1 docstring (EMV Book 2 8.2.1), ARC 0000
    assert emv.generate_arpc_method1(SK_AC, arqc, b"\x00\x00").hex().upper() == \
        "F5E6F44147E2F1B0"
    # pyemv ac.generate_arpc_2 docstring (EMV Book 2 8.2.2), CSU 00000000
    assert emv.generate_arpc_method2(SK_AC, arqc, bytes(4)).hex().upper() == "9308BEBC"


# --- ISO 9564-1 format 4 (psec 1.3.0 pinblock docstrings) -------------------------------
def test_iso9564_format4_decipher_psec_example() -> None:
    # psec.pinblock.decipher_pinblock_iso_4 docstring: key 0011..EEFF, PAN 1234567890123456
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    block = bytes.fromhex("E4BE5B623AF7E006AC319E5B93544564")
    assert pin._decipher(key, block, "1234567890123456") == "1234"
    # and translation out of that block lands on a block the destination key opens to 1234
    dst = bytes(range(32))
    out = pin.translate_pin_block(key, dst, block, "1234567890123456")
    assert pin._decipher(dst, out, "1234567890123456") == "1234"


# --- PIN verification values (psec 1.3.0 pin docstrings) --------------------------------
def test_visa_pvv_and_ibm3624_psec_examples() -> None:
    pvk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert pin.visa_pvv(pvk, "3", "4524", "1122334455667788") == "4021"
    # psec generate_ibm3624_offset docstring uses conversion table 1234567890123456
    from psec import pin as ppin

    assert ppin.generate_ibm3624_offset(pvk, "1234567890123456", "4524", "1122334455667788",
                                        0, 16, "F") == "0000"


# --- TR-31 / ANSI X9.143 -------------------------------------------------------------------
A74_KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
A74_BLOCK = ("D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A2"
             "7E8E31DA05F7425509593D03A457DC34")


def test_tr31_2018_a74_unwraps_and_header_is_checked() -> None:
    # TR-31:2018 Annex A.7.4 (as also used by openemv/tr31's tests): AES KBPK, P0/A/E, exportable
    # "E". It opens, yields the published key and KCV, and the platform still refuses it for
    # PIN_ENC because CardBus is provisioned for non-exportable ("N") PIN keys only.
    from psec import tr31 as ptr31

    _, key = ptr31.unwrap(A74_KBPK, A74_BLOCK)
    assert key.hex().upper() == "3F419E1CB7079442AA37474C2EFBF8B8"
    assert kcv(key, KeyAlg.AES) == "08793E"  # published KCV of A.7.4
    with pytest.raises(KeyBlockHeaderMismatch):
        tr31.unwrap_key_block(A74_KBPK, A74_BLOCK, KeyUsage.PIN_ENC)


def test_tdes_kcv_tr31_a722() -> None:
    # TR-31:2018 A.7.2.2: key 3F419E1C... has the (TDES) KCV 57C409
    assert kcv(bytes.fromhex("3F419E1CB7079442AA37474C2EFBF8B8"), KeyAlg.TDES) == "57C409"


def test_tr31_payshield_aes256_example_kcv() -> None:
    # openemv/tr31 test8 (generated on a Thales payShield 10k): AES-256 key, KCV 0A00E3
    from psec import tr31 as ptr31

    block = ("D0144D0AN00N0000127862F945C2DED04530FAF7CDBC8B0BA10C7AA79BD5E0C2C5D6AC173BF588E4"
             "B19ACF1357178D50EA0AB193228E13958304FC6149632DFDCADF3A5B3D57E814")
    _, key = ptr31.unwrap(b"A" * 32, block)
    assert kcv(key, KeyAlg.AES) == "0A00E3"


# --- EMV Issuer and Application Security Guidelines v3.0, Annex A.3.3 ----------------------
# "Example of ARQC generation": the recommended CDOL1 data (EMV Book 2 8.1.1), as the jPOS
# project quotes it in its tests (CVNCPADataBuilderTest, CVNMCDataBuilderTest): amount 100.00,
# other 10.00, country 0840, TVR 0000001080, currency 0840, date 98-07-04, type 00, UN 11111111,
# AIP 5800, ATC 3456. CardBus builds (emv.arqc_data) and parses (the issuer's check of what the
# ARQC covers) exactly that layout.
A33_DATA = "000000010000000000001000084000000010800840980704001111111158003456"


def test_arqc_data_layout_emv_security_guidelines_a33() -> None:
    from cardbus.emv.data import parse_arqc_data

    built = emv.arqc_data(amount=10_000, amount_other=1_000, country_code=840,
                          tvr=bytes.fromhex("0000001080"), currency_code=840, date="980704",
                          tx_type=0x00, unpredictable_number=bytes.fromhex("11111111"),
                          aip=bytes.fromhex("5800"), atc=0x3456)
    assert built.hex().upper() == A33_DATA
    got = parse_arqc_data(bytes.fromhex(A33_DATA))
    assert (got.amount, got.amount_other, got.country, got.tvr.hex().upper(), got.currency,
            got.date, got.tx_type, got.unpredictable_number.hex(), got.aip.hex(), got.atc) == (
        10_000, 1_000, 840, "0000001080", 840, "980704", 0, "11111111", "5800", 0x3456)
