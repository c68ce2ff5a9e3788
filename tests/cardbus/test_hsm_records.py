"""Key records and the HSMs' per-key state: a key version stored once (the same key again is
idempotent, another key under it refused), a provider's key block accepted again unchanged, keys
installed on a terminal under their own version and algorithm, each role signing with its newest
identity key, nonce budgets and PIN-data keys per key version, a card profile's own PAN and
expiry, and the EMV PAN/PSN checks."""

from __future__ import annotations

import pytest

from cardbus.crypto import emv
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring, b64d, memory_keystore
from cardbus.crypto.signing import Signer
from cardbus.crypto.tr31 import wrap_key_block
from cardbus.errors import CryptoError, CryptogramInvalid, UnwrapError

World = tuple[PlatformHsm, ProviderHsm, TerminalHsm]


def test_a_key_version_is_stored_once() -> None:
    ks = memory_keystore()
    key = new_key(KeyAlg.AES)
    rec = ks.put("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES, key, version=3)
    again = ks.put("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES, key, version=3)
    assert (again.key_id, again.version, again.kcv) == (rec.key_id, 3, rec.kcv)
    with pytest.raises(CryptoError) as other:
        ks.put("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES, new_key(KeyAlg.AES), version=3)
    assert str(other.value) == "key pan:x v3 already stored with another value"
    assert ks.key("pan:x", KeyUsage.PAN_ENC, version=3) == key


def test_the_same_key_block_accepted_again_is_the_same_record(world: World) -> None:
    plat, prov, _ = world
    block = prov.export_key_block(KeyUsage.PIN_ENC)
    first = plat.keys.record("pin:bank-a")
    assert plat.accept_key_block("bank-a", KeyUsage.PIN_ENC, block) == first
    assert plat.accept_key_block("bank-a", KeyUsage.PIN_ENC, block, version=first.version) \
        == first
    assert [v for (k, v) in plat.keys._records if k == "pin:bank-a"] == [first.version]


def test_a_key_block_naming_version_00_takes_the_given_version() -> None:
    plat = PlatformHsm(KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    prov = ProviderHsm("bank-a", KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    kbpk = new_key(KeyAlg.AES)
    plat.import_provider_kbpk("bank-a", kbpk)
    prov.import_kbpk(kbpk)
    key = prov.keys.key("pin:bank-a", KeyUsage.PIN_ENC)
    block = wrap_key_block(kbpk, KeyUsage.PIN_ENC, key)  # header version "00": unnamed
    assert plat.accept_key_block("bank-a", KeyUsage.PIN_ENC, block, version=7).version == 7


def test_terminal_keys_keep_their_version_and_algorithm(world: World) -> None:
    plat, _, term = world
    for blob in plat.enroll_terminal("T-1", term.public_kex()):
        rec = term.install(blob)
        assert f"{rec.key_id}.v{rec.version}" == blob.key_id and rec.version == 2
        assert rec.alg is (KeyAlg.HMAC if rec.usage is KeyUsage.MAC else KeyAlg.AES)
        assert rec.owner == "terminal:T-1"


def test_a_key_for_another_terminal_is_not_installed(world: World) -> None:
    plat, _, term = world
    other = TerminalHsm("T-2", memory_keystore())
    blob = plat.enroll_terminal("T-2", other.public_kex())[0]
    with pytest.raises(UnwrapError) as exc:
        term.install(blob)
    assert str(exc.value) == f"{blob.key_id} is not a key for terminal T-1"
    with pytest.raises(UnwrapError) as unknown:
        term.install(blob.model_copy(update={"key_id": "kbpk:T-1.v1"}))
    assert str(unknown.value) == "kbpk:T-1.v1 is not a key for terminal T-1"


def test_a_role_signs_with_its_newest_identity_key() -> None:
    ks = memory_keystore()
    for _ in range(2):
        ks.generate("sign:platform", KeyUsage.SIGNING, "platform", KeyAlg.ED25519)
    plat = PlatformHsm(ks)
    assert plat.verifier.key_id == "sign:platform.v2"
    assert plat.verifier.public_bytes() == plat.signer.public_bytes()
    seal = plat.signer.seal(b"x")
    assert Signer("k", ks.key("sign:platform", KeyUsage.SIGNING, version=2)).seal(b"x").value \
        == seal.value


def test_nonce_budgets_are_per_key_version(world: World) -> None:
    _, prov, _ = world
    a, b = prov.budget("pvd:bank-a.v1"), prov.budget("pvd:bank-a.v2")
    assert a is not b and (a.key_name, b.key_name) == ("pvd:bank-a.v1", "pvd:bank-a.v2")
    assert prov.budget("pvd:bank-a.v1") is a
    used = a.used
    sealed = prov.seal_card_secret("4821", "TOKEN-1")
    assert sealed.key_id == "pvd:bank-a.v1" and a.used == used + 1 and b.used == 0
    assert len(b64d(sealed.nonce)) == 12


def test_pin_data_sealed_under_an_older_key_still_opens_after_rotation(world: World) -> None:
    _, prov, _ = world
    old = prov.seal_card_secret("4821", "TOKEN-1")
    prov.keys.generate("pvd:bank-a", KeyUsage.PIN_DATA, "provider:bank-a", KeyAlg.AES)
    new = prov.seal_card_secret("1357", "TOKEN-1")
    assert (old.key_id, new.key_id) == ("pvd:bank-a.v1", "pvd:bank-a.v2")
    assert prov._open_card_secret(old, "TOKEN-1") == "4821"
    assert prov._open_card_secret(new, "TOKEN-1") == "1357"


def test_a_pin_data_key_of_another_owner_is_refused(world: World) -> None:
    _, prov, _ = world
    prov.keys.generate("pvd:bank-a", KeyUsage.PIN_DATA, "provider:bank-b", KeyAlg.AES)
    with pytest.raises(CryptoError) as exc:
        prov.seal_card_secret("4821", "TOKEN-1")
    assert str(exc.value) == "key pvd:bank-a belongs to provider:bank-b, not provider:bank-a"


def test_a_card_profile_carries_its_own_pan_and_expiry(world: World, pan: str) -> None:
    _, prov, _ = world
    profile = prov.issue_card(pan, "4821", "2812")
    assert (profile.pan, profile.expiry, profile.psn) == (pan, "2812", "00")
    assert len(profile.isd_kdd) == 10


@pytest.mark.parametrize(("pan", "psn"), [("12a4567890123", "00"), ("6222021234567890", "1"),
                                          ("6222021234567890", "0A"), ("6222021234567890", "001")])
def test_pan_and_psn_must_be_digits(pan: str, psn: str) -> None:
    with pytest.raises(CryptogramInvalid) as exc:
        emv.derive_icc_master_key(bytes(range(16)), pan, psn)
    assert str(exc.value) == "PAN and PSN must be digits (PSN two digits)"
    with pytest.raises(CryptoError) as imk:
        emv.derive_icc_master_key(bytes(range(24)), "6222021234567890", "00")
    assert str(imk.value) == "issuer master key must be a double-length TDES key"
