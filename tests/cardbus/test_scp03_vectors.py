"""SCP03 checked against published vectors; none of the expected values was produced by the
code under test.

Sources:
- RFC 4493 section 4 (AES-CMAC examples 1-4).
- NIST CAVP SP 800-108 KBKDF, CAVS 14.4 ``KDFCTR_gen.rsp``, ``[PRF=CMAC_AES128]
  [CTRLOCATION=MIDDLE_FIXED] [RLEN=8_BITS]`` COUNT=18 and COUNT=20, and ``BEFORE_FIXED``
  COUNT=0 and COUNT=10, as kept in pyca/cryptography
  ``vectors/cryptography_vectors/KDF/nist-800-108-KBKDF-CTR.txt`` (commit 87ba48b0cc0b).
- osmocom/pysim ``tests/unittests/test_globalplatform.py`` (commit 078ac2bf19d2, unchanged at
  d9d62ee72929): classes ``SCP03_Test_AES128_11``, ``_03``, ``_33`` (an SCP03 card with "i" =
  '70', key set 30: INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, a STORE DATA and four commands
  wrapped in sequence, a response with R-MAC / R-ENCRYPTION) and ``SCP03_KCV_Test``.
- martinpaljak/GlobalPlatformPro ``library/src/test/java/pro/javacard/gp/test/
  TestPlaintextKeys.java`` (commit 80cf18c5a441): ``testDiversification_KDF3_SCP03_AES128``
  (KCVs of kdf3-diversified keys) and the 32-byte ``testDiversification_KDF3_ExternalVector``
  (also ``TestSCP03.testKDF3`` at c0623a7bd029).
- FIPS 197 Appendix C.1 (AES-128 single block), for the Key-DEK encryption.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cardbus.crypto import scp03
from cardbus.errors import SecureChannelError

H = bytes.fromhex


# --- RFC 4493 section 4 ---------------------------------------------------------------------
RFC4493_KEY = H("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MSG = H("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")


@pytest.mark.parametrize(("length", "mac"), [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_aes_cmac_rfc4493(length: int, mac: str) -> None:
    assert scp03.aes_cmac(RFC4493_KEY, RFC4493_MSG[:length]).hex() == mac


# --- NIST SP 800-108 CAVP, counter mode, CMAC-AES128, 8-bit counter -----------------------
@pytest.mark.parametrize(("ki", "before", "after", "bits", "ko"), [
    (  # MIDDLE_FIXED, RLEN=8_BITS, COUNT=18 (two PRF calls)
        "2470ebe975b6563c895585252d3fbf7d",
        "136ce8cab72d1cffa11c59c5e32adf2d1ecab9e849d3bea31c4b162db5e0bcc8d597c6dc35993391c5a0"
        "45d1a2de67c2878a", "36431c3ce455d076b766", 256,
        "7851acd70936fe115602fb6d52a4e8037c091e4f5b46caf44c0188528e37f863"),
    (  # MIDDLE_FIXED, RLEN=8_BITS, COUNT=20 (160 bits: the second block truncated)
        "db6891ec19c0a5648c49cc214aa79a62",
        "0e9dc3c24d8fee4c8ebae8496dd74a8c43e98df9b44f5a87ca3e0e06f25316c42e40ab56f0514b41abaf"
        "b62436df5e2a853b", "5e3b3bb3678e62841248", 160,
        "4333fc7ffa48b574c623704306242b78e5bc07e3"),
    (  # BEFORE_FIXED, RLEN=8_BITS, COUNT=0 (nothing before the counter)
        "dff1e50ac0b69dc40f1051d46c2b069c", "",
        "c16e6e02c5a3dcc8d78b9ac1306877761310455b4e41469951d9e6c2245a064b33fd8c3b01203a7824485b"
        "f0a64060c4648b707d2607935699316ea5", 128, "8be8f0869b3c0ba97b71863d1b9f7813"),
    (  # BEFORE_FIXED, RLEN=8_BITS, COUNT=10
        "682e814d872397eba71170a693514904", "",
        "e323cdfa7873a0d72cd86ffb4468744f097db60498f7d0e3a43bafd2d1af675e4a88338723b12361997053"
        "57c47bf1d89b2f4617a340980e6331625c", 256,
        "dac9b6ca405749cfb065a0f1e42c7c4224d3d5db32fdafe9dee6ca193316f2c7"),
])
def test_kbkdf_cmac_nist_cavp(ki: str, before: str, after: str, bits: int, ko: str) -> None:
    assert scp03.kbkdf_cmac(H(ki), H(before), H(after), bits // 8).hex() == ko


# --- pySim: a real SCP03 card ("i" = 70, pseudo-random challenges) -------------------------
KEYS = scp03.StaticKeys(H("000102030405060708090a0b0c0d0e0f"),
                        H("101112131415161718191a1b1c1d1e1f"),
                        H("202122232425262728292a2b2c2d2e2f"), 0x30)
# The card's challenges derive from the AID of the SGP.22 ISD-R (the security domain that
# answered in pySim's recording): checking them proves ``card_challenge`` as well.
ISD_R = H("A0000005591010FFFFFFFF8900000100")
GET_EID = H("80E2910006BF3E035C015A00")
GET_EID_PLAIN = H("bf3e125a1089882119900000000000000000000005")
CASES = [H("80F22002"), H("80ca006600"), H("80F220020a4f0212345c054f9f70c5"),
         H("80f28002024f0000")]


@dataclass(frozen=True)
class PySimVector:
    init_upd_cmd: str
    init_upd_rsp: str
    ext_auth_cmd: str
    get_eid_cmd: str
    get_eid_rsp: str
    cases: tuple[str, str, str, str]


PYSIM = {
    0x11: PySimVector(
        "8050300008b13e5f938fc108c400",
        "000000000000000000003003703eb51047495b249f66c484c1d2ef1948000002",
        "84821100107d5f5826a993ebc89eea24957fa0b3ce",
        "84e291000ebf3e035c015a558d036518a2829700",
        "bf3e125a1089882119900000000000000000000005971be68992dbbdfa",
        ("84f220020863a63f8959827fb2", "84ca006608a0c6a4a74166f7ce00",
         "84f22002124f0212345c054f9f70c52249b50272656536", "84f280020a4f00e91443f6dce6b8ed00")),
    0x03: PySimVector(
        "80503000088e1552d0513c60f300",
        "0000000000000000000030037030760cd2c47c1dd395065fe5ead8a9d7000001",
        "8482030010fd4721a14d9b07003c451d2f8ae6bb21",
        "84e2910018ca9c00f6713d79bc8baa642bdff51c3f6a4082d3bd9ad26c00",
        "bf3e125a1089882119900000000000000000000005",
        ("84f2200208c9811b11f1264cf1", "84ca006608e10ab60b3054798800",
         "84f22002184e2908bdb48b2315a55482e9e936ca122d6ecfae7d17416e",
         "84f28002180dd10a6b6193e5340b9e77d32d5a179cd710ac2773aefb2800")),
    0x33: PySimVector(
        "8050300008fdf38259a1e0de4400",
        "000000000000000000003003703b1aca81e821f219081cdc01c26b372d000003",
        "84823300108c36f96bcc00724a4e13ad591d7da3f0",
        "84e2910018267a85dfe4a98fca6fb0527e0dfecce4914e40401433c87f00",
        "f3ba2b1013aa6224f5e1c138d71805c569e5439b47576260b75fc021b25097cb2e68f8a0144975b9",
        ("84f2200208ac6a59024bed84cc", "84ca006608409912ad8fb7aed000",
         "84f22002185f3dafc3ac14c381536a488bf44e06d056df9d74dbd21e5a",
         "84f280021865165105be3373347d0424d4400af2ac393f569ec779389e00")),
}


def _authenticate(level: int, v: PySimVector) -> tuple[scp03.Channel, bytes, bytes]:
    host_challenge = H(v.init_upd_cmd)[5:13]
    rsp = H(v.init_upd_rsp)
    assert rsp[10:13] == bytes([0x30, 0x03, 0x70])  # key version 30, SCP03, i = 70
    card_challenge, card_cryptogram, seq = rsp[13:21], rsp[21:29], rsp[29:32]
    assert scp03.card_challenge(KEYS.enc, int.from_bytes(seq, "big"), ISD_R) == card_challenge
    sk = scp03.session_keys(KEYS, host_challenge, card_challenge)
    assert scp03.card_cryptogram(sk, host_challenge, card_challenge) == card_cryptogram
    hc = scp03.host_cryptogram(sk, host_challenge, card_challenge)
    ch, ext_auth = scp03.wrap_command(scp03.begin(sk, level),
                                      bytes([0x80, 0x82, level, 0x00, 0x08]) + hc,
                                      encrypt=False)
    return ch, ext_auth, hc


@pytest.mark.parametrize("level", sorted(PYSIM))
def test_host_side_reproduces_pysim_recording(level: int) -> None:
    v = PYSIM[level]
    ch, ext_auth, _hc = _authenticate(level, v)
    assert ext_auth.hex() == v.ext_auth_cmd
    ch, wrapped = scp03.wrap_command(ch, GET_EID)
    assert wrapped.hex() == v.get_eid_cmd
    assert scp03.unwrap_response(ch, H(v.get_eid_rsp), 0x9000) == GET_EID_PLAIN
    for plain, expected in zip(CASES, v.cases, strict=True):
        ch, wrapped = scp03.wrap_command(ch, plain)
        assert wrapped.hex() == expected
    assert ch.counter == 5  # GET EID + four commands, with or without data (6.2.6)


@pytest.mark.parametrize("level", sorted(PYSIM))
def test_card_side_reproduces_pysim_recording(level: int) -> None:
    """The card's direction: verify each recorded command, recover the plain one, and
    produce the recorded response byte for byte."""
    v = PYSIM[level]
    host_challenge = H(v.init_upd_cmd)[5:13]
    card_challenge = H(v.init_upd_rsp)[13:21]
    sk = scp03.session_keys(KEYS, host_challenge, card_challenge)
    ch, ext_auth = scp03.unwrap_command(scp03.begin(sk, level), H(v.ext_auth_cmd),
                                        decrypt=False)
    assert ext_auth.data == scp03.host_cryptogram(sk, host_challenge, card_challenge)
    ch, cmd = scp03.unwrap_command(ch, H(v.get_eid_cmd))
    assert cmd.encode() == GET_EID
    assert scp03.wrap_response(ch, GET_EID_PLAIN, 0x9000) == H(v.get_eid_rsp) + H("9000")
    for plain, recorded in zip(CASES, v.cases, strict=True):
        ch, cmd = scp03.unwrap_command(ch, H(recorded))
        assert cmd.encode().hex() == plain.hex()


def test_replayed_or_altered_command_fails_its_mac() -> None:
    v = PYSIM[0x11]
    host_challenge, card_challenge = H(v.init_upd_cmd)[5:13], H(v.init_upd_rsp)[13:21]
    sk = scp03.session_keys(KEYS, host_challenge, card_challenge)
    ch, _ = scp03.unwrap_command(scp03.begin(sk, 0x11), H(v.ext_auth_cmd), decrypt=False)
    after_eid, _ = scp03.unwrap_command(ch, H(v.get_eid_cmd))
    with pytest.raises(SecureChannelError, match="C-MAC"):  # the same command again
        scp03.unwrap_command(after_eid, H(v.get_eid_cmd))
    with pytest.raises(SecureChannelError, match="C-MAC"):  # out of order
        scp03.unwrap_command(ch, H(v.cases[0]))
    tampered = bytearray(H(v.get_eid_cmd))
    tampered[7] ^= 0x01
    with pytest.raises(SecureChannelError, match="C-MAC"):
        scp03.unwrap_command(ch, bytes(tampered))
    with pytest.raises(SecureChannelError, match="R-MAC"):
        scp03.unwrap_response(after_eid, H(v.get_eid_rsp)[:-1] + b"\x00", 0x9000)
    with pytest.raises(SecureChannelError, match="secure messaging"):
        scp03.unwrap_command(ch, GET_EID)


def test_aes_kcv_pysim() -> None:
    # pySim SCP03_KCV_Test (GP Amendment D 7.2.2: AES over a block of '01')
    assert [scp03.kcv_aes(k).hex().upper() for k in (KEYS.enc, KEYS.mac, KEYS.dek)] == \
        ["C35280", "013808", "840DE5"]


# --- GlobalPlatformPro kdf3 card key diversification ----------------------------------------
def test_kdf3_diversification_globalplatformpro_kcvs() -> None:
    keys = scp03.diversify_kdf3(H("404142434445464748494A4B4C4D4E4F"), H("00010203040506070809"))
    assert [scp03.kcv_aes(k).hex().upper() for k in (keys.enc, keys.mac, keys.dek)] == \
        ["E79C05", "D1BD77", "3FDE8C"]


def test_kdf3_external_vector_globalplatformpro() -> None:
    # A 32-byte master: two PRF calls.
    enc = scp03.kdf3_key(H("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD"),
                         H("D9B1DE5D0362DEDCE4FB"), 1)
    assert enc.hex().upper() == \
        "9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781"


# --- Key-DEK -------------------------------------------------------------------------------
def test_dek_encryption_is_aes_cbc_zero_icv_fips197() -> None:
    # FIPS 197 Appendix C.1: one block under AES-128 (CBC with a zero ICV is ECB here)
    dek = H("000102030405060708090a0b0c0d0e0f")
    ct = scp03.encrypt_sensitive(dek, H("00112233445566778899aabbccddeeff"))
    assert ct.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert scp03.decrypt_sensitive(dek, ct).hex() == "00112233445566778899aabbccddeeff"


def test_put_key_data_layout_table_7_10() -> None:
    dek = H("000102030405060708090a0b0c0d0e0f")
    key = H("00112233445566778899aabbccddeeff")
    data = scp03.put_key_data(dek, key)
    # '88' AES, '11' length, '10' key length, the key under the DEK (FIPS 197 C.1), KCV
    assert data.hex() == "881110" + "69c4e0d86a7b0430d8cdb78070b4c55a" + "03" + \
        scp03.kcv_aes(key).hex()
    assert scp03.open_put_key_data(dek, data) == key
    with pytest.raises(SecureChannelError, match="key check value"):
        scp03.open_put_key_data(dek, data[:-1] + bytes([data[-1] ^ 1]))
