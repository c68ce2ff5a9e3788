"""Issue 22, finding 10 and the key-lifecycle lows: bounded key caches, retired and revoked key
versions, the TR-31 key-version field, and a usage limit on AES-GCM keys with random nonces."""

from __future__ import annotations

import pytest

from cardbus.crypto import tr31
from cardbus.crypto.cache import GCM_RANDOM_NONCE_LIMIT, ExpiringCache, NonceBudget
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import memory_keystore
from cardbus.crypto.pan import PanCipher
from cardbus.errors import KeyBlockHeaderMismatch, KeyUsageError, MissingKeyError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_entry_lives_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache: ExpiringCache[str, bytes] = ExpiringCache(ttl=300, max_entries=2, clock=clock)
    cache.put("k", b"key")
    clock.now += 299.999
    assert cache.get("k") == b"key"
    clock.now += 0.001
    assert cache.get("k") is None and len(cache) == 0


def test_past_its_bound_the_oldest_entry_goes_first() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(ttl=60, max_entries=2, clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    with pytest.raises(ValueError, match="positive lifetime"):
        ExpiringCache(ttl=0)


def test_the_keystore_drops_clear_keys_after_their_ttl() -> None:
    ks = memory_keystore()
    clock = Clock()
    ks._cache = ExpiringCache(ttl=300, clock=clock)
    ks.generate("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    assert len(ks._cache) == 1
    clock.now += 300
    key = ks.key("pan:x", KeyUsage.PAN_ENC)  # opened again from its record, same bytes
    assert len(key) == 32 and len(ks._cache) == 1


def test_icc_key_cache_is_keyed_by_imk_version_and_pan_token_not_the_pan() -> None:
    hsm = ProviderHsm("bank-z", memory_keystore())
    pan = "6222020000000006"
    hsm._icc_master_key(hsm._latest("imk:bank-z"), pan, "00")
    ((which, _),) = list(hsm._icc_keys._entries.items())
    assert pan not in repr(which) and which[1].startswith("tok_")
    assert which[0] == "imk:bank-z.v1"


def test_a_retired_version_opens_old_work_but_makes_nothing_new() -> None:
    ks = memory_keystore()
    ks.generate("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES)
    ks.generate("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES)
    ks.retire("tpk:T-1", 2)
    assert ks.latest_version("tpk:T-1") == 1
    assert len(ks.key("tpk:T-1", KeyUsage.PIN_ENC, version=2)) == 32
    assert ks.generate("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES).version == 3
    ks.retire("tpk:T-1", 1)
    ks.retire("tpk:T-1", 3)
    with pytest.raises(MissingKeyError, match="no active key"):
        ks.latest_version("tpk:T-1")


def test_a_revoked_version_never_opens_again() -> None:
    ks = memory_keystore()
    ks.generate("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    ks.revoke("pan:x", 1)
    with pytest.raises(KeyUsageError, match="revoked"):
        ks.key("pan:x", KeyUsage.PAN_ENC, version=1)
    assert ks.retire("pan:x", 1).status == "revoked"  # revoked is final
    reopened = memory_keystore()
    reopened.load_records(ks.records())
    assert reopened.record("pan:x", 1).status == "revoked"


def test_tr31_header_version_is_the_key_s_version() -> None:
    plat, prov = PlatformHsm(memory_keystore()), ProviderHsm("bank-z", memory_keystore())
    kbpk = new_key(KeyAlg.AES, 32)
    plat.import_provider_kbpk("bank-z", kbpk)
    prov.import_kbpk(kbpk)
    prov.keys.generate("pin:bank-z", KeyUsage.PIN_ENC, prov.identity, KeyAlg.AES)  # v2
    block = prov.export_key_block(KeyUsage.PIN_ENC)
    assert block[9:11] == "02"  # TR-31 header bytes 9-10: key version number
    assert plat.accept_key_block("bank-z", KeyUsage.PIN_ENC, block, version=2).version == 2
    with pytest.raises(KeyBlockHeaderMismatch, match="version 02"):
        plat.accept_key_block("bank-z", KeyUsage.PIN_ENC, block, version=3)
    assert plat.accept_key_block("bank-z", KeyUsage.PIN_ENC, block).version == 2
    plat.keys.revoke("pin:bank-z", 2)
    with pytest.raises(KeyUsageError, match="revoked"):
        plat.accept_key_block("bank-z", KeyUsage.PIN_ENC, block, version=2)


def test_a_gcm_key_with_random_nonces_stops_at_its_limit() -> None:
    assert GCM_RANDOM_NONCE_LIMIT == 2**32  # NIST SP 800-38D 8.3
    budget = NonceBudget("pan:x.v1", limit=2)
    cipher = PanCipher("pan:x.v1", new_key(KeyAlg.AES, 32), budget=budget)
    cipher.encrypt("6222020000000006", "c1")
    cipher.encrypt("6222020000000006", "c2")
    with pytest.raises(KeyUsageError, match="rotate"):
        cipher.encrypt("6222020000000006", "c3")
    assert budget.used == 2


def test_a_role_s_budget_outlives_its_cipher_cache() -> None:
    hsm = ProviderHsm("bank-z", memory_keystore())
    vid = hsm._latest("pan:bank-z")
    hsm._pan_cipher(vid, hsm.identity).encrypt("6222020000000006", "c1")
    hsm._objects.clear()  # the cipher object expired
    hsm._pan_cipher(vid, hsm.identity).encrypt("6222020000000006", "c2")
    assert hsm.budget(vid).used == 2


def test_tr31_wrap_refuses_a_version_field_that_is_not_two_characters() -> None:
    with pytest.raises(tr31.KeyBlockError):
        tr31.wrap_key_block(new_key(KeyAlg.AES, 32), KeyUsage.PIN_ENC, new_key(KeyAlg.AES, 32),
                            version_num="123")
