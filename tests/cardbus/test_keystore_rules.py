"""Key store and provider HSM rules with literal values: a storage-key rotation moves every
record once and keeps each key's version; a key's status is what was set; ARPC method 2 from the
provider's HSM is the card's (mutation testing showed what no test pinned)."""

from __future__ import annotations

from cardbus.crypto import emv
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring, memory_keystore


def test_rewrap_moves_every_old_record_once_and_keeps_versions() -> None:
    v1 = new_key(KeyAlg.AES, 32)
    ks = KeyStore(StorageKeyring({1: v1}))
    for _ in range(2):
        ks.generate("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    ks.generate("tmk:T-1", KeyUsage.MAC, "terminal:T-1", KeyAlg.HMAC)
    clear = {(r.key_id, r.version): ks.key(r.key_id, r.usage, version=r.version)
             for r in ks.records()}
    rotated = KeyStore(StorageKeyring({1: v1, 2: new_key(KeyAlg.AES, 32)}), ks.records())
    assert rotated.rewrap() == 3
    assert rotated.rewrap() == 0  # nothing left on the old version
    again = {(r.key_id, r.version): rotated.key(r.key_id, r.usage, version=r.version)
             for r in rotated.records()}
    assert again == clear and {r.storage_version for r in rotated.records()} == {2}
    assert sorted(v for (k, v) in again if k == "pan:x") == [1, 2]


def test_a_key_s_status_is_the_one_set() -> None:
    ks = memory_keystore()
    ks.generate("k:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    ks.generate("k:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    assert ks.retire("k:x", 1).status == "retired" and ks.record("k:x", 1).status == "retired"
    assert ks.record("k:x", 2).status == "active"
    ks.key("k:x", KeyUsage.PAN_ENC, version=2)
    ks.revoke("k:x", 2)
    assert ks.record("k:x", 2).status == "revoked"
    assert ("k:x", 2) not in ks._cache._entries  # its clear copy is gone too


def test_arpc_method2_from_the_provider_hsm_is_the_card_s() -> None:
    hsm = ProviderHsm("bank-z", memory_keystore())
    pan, psn, atc = "6222020000000006", "01", 7
    profile = hsm.issue_card(pan, "1234", "3012", psn=psn)
    blob = hsm._pan_cipher(hsm._latest("pan:bank-z"), hsm.identity).encrypt(pan, "pay-1")
    arqc, csu = bytes.fromhex("1122334455667788"), bytes.fromhex("00800000")
    sk = emv.derive_session_key(profile.icc_master_key, atc)
    got = hsm.arpc_method2(blob, "pay-1", psn, atc, arqc, csu)
    assert got == emv.generate_arpc_method2(sk, arqc, csu) and len(got) == 4
    emv.verify_arpc_method2(sk, arqc, csu, got)
    assert hsm.arpc_method2(blob, "pay-1", psn, atc + 1, arqc, csu) != got
