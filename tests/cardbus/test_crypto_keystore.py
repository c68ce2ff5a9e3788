"""The storage key (file/env, never a default), the AEAD key store, rotation, and the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cardbus.crypto import pin as pin_module
from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv, new_key
from cardbus.crypto.keystore import (
    ENV_VAR,
    KeyStore,
    StorageKeyring,
    StoredKey,
    b64d,
    b64e,
    init_storage_key_file,
)
from cardbus.errors import ConfigError, KeyUsageError, MissingKeyError, UnwrapError
from console.cli import main


def test_missing_storage_key_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError):
        StorageKeyring.load(env={})
    with pytest.raises(MissingKeyError):
        StorageKeyring.load(tmp_path / "absent.json")


def test_init_writes_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k" / "storage.json"
    assert init_storage_key_file(path) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert StorageKeyring.load(path).versions == [1]
    with pytest.raises(ConfigError):
        init_storage_key_file(path)


def test_loose_permissions_refused(tmp_path: Path) -> None:
    path = tmp_path / "storage.json"
    init_storage_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError):
        StorageKeyring.load(path)


def test_env_key_versions() -> None:
    k1, k2 = new_key(KeyAlg.AES), new_key(KeyAlg.AES)
    ring = StorageKeyring.load(env={ENV_VAR: f"1:{b64e(k1)},2:{b64e(k2)}"})
    assert ring.versions == [1, 2] and ring.current == 2
    assert StorageKeyring.load(env={ENV_VAR: b64e(k1)}).versions == [1]
    with pytest.raises(ConfigError):
        StorageKeyring.load(env={ENV_VAR: "1:" + b64e(b"short")})


def test_records_are_encrypted_and_bound(keystore: KeyStore) -> None:
    key = new_key(KeyAlg.AES)
    rec = keystore.put("pin:bank-a", KeyUsage.PIN_ENC, "provider:bank-a", KeyAlg.AES, key)
    assert rec.kcv == kcv(key, KeyAlg.AES)
    assert key.hex() not in rec.model_dump_json().lower()
    # a fresh store over the same records (as after a restart) opens it
    store2 = KeyStore(keystore._keyring, keystore.records())
    assert store2.key("pin:bank-a", KeyUsage.PIN_ENC, owner="provider:bank-a") == key
    # the record moved to another id, usage or owner does not open
    for change in ({"key_id": "pin:bank-b"}, {"owner": "provider:bank-b"},
                   {"usage": KeyUsage.PAN_ENC}, {"version": 2}):
        moved = StoredKey(**{**rec.model_dump(), **change})
        store3 = KeyStore(keystore._keyring, [moved])
        with pytest.raises(UnwrapError):
            store3.key(moved.key_id, moved.usage, version=moved.version)


def test_wrong_usage_and_owner(keystore: KeyStore) -> None:
    keystore.generate("tmk:T-1", KeyUsage.MAC, "terminal:T-1", KeyAlg.HMAC)
    with pytest.raises(KeyUsageError):
        keystore.key("tmk:T-1", KeyUsage.PIN_ENC)
    with pytest.raises(KeyUsageError):
        keystore.key("tmk:T-1", KeyUsage.MAC, owner="terminal:T-2")
    with pytest.raises(MissingKeyError):
        keystore.key("tmk:T-9", KeyUsage.MAC)


def test_tampered_record(keystore: KeyStore) -> None:
    rec = keystore.generate("k", KeyUsage.MAC, "platform", KeyAlg.HMAC)
    ct = bytearray(rec.ct.encode())
    ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
    bad = rec.model_copy(update={"ct": ct.decode()})
    with pytest.raises(UnwrapError):
        KeyStore(keystore._keyring, [bad]).key("k", KeyUsage.MAC)


def test_storage_key_rotation(tmp_path: Path) -> None:
    path = tmp_path / "storage.json"
    init_storage_key_file(path)
    old = KeyStore(StorageKeyring.load(path))
    key = new_key(KeyAlg.AES)
    rec_old = old.put("pan:bank-a", KeyUsage.PAN_ENC, "provider:bank-a", KeyAlg.AES, key)
    assert init_storage_key_file(path, rotate=True) == 2
    ring = StorageKeyring.load(path)
    assert ring.versions == [1, 2]
    store = KeyStore(ring, [rec_old])
    assert store.key("pan:bank-a", KeyUsage.PAN_ENC) == key  # old material still opens
    rec_new = store.put("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES,
                        new_key(KeyAlg.AES))
    assert rec_new.storage_version == 2  # new work uses the newest version
    assert store.rewrap() == 1
    assert {r.storage_version for r in store.records()} == {2}
    # after re-wrapping, the keyring without version 1 opens everything
    data = json.loads(path.read_text())
    only2 = StorageKeyring({2: b64d(data["keys"]["2"])})
    assert KeyStore(only2, store.records()).key("pan:bank-a", KeyUsage.PAN_ENC) == key


def test_key_versions(keystore: KeyStore) -> None:
    a = keystore.generate("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES)
    b = keystore.generate("tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-1", KeyAlg.AES)
    assert (a.version, b.version) == (1, 2)
    assert keystore.latest_version("tpk:T-1") == 2
    assert keystore.key("tpk:T-1", KeyUsage.PIN_ENC, version=1) != \
        keystore.key("tpk:T-1", KeyUsage.PIN_ENC)


def test_cli_keys_init_and_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "storage.json"
    assert main(["keys", "init", "--path", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keys", "init", "--path", str(path)]) == 1  # refuses to overwrite
    assert main(["keys", "init", "--path", str(path), "--rotate"]) == 0
    assert StorageKeyring.load(path).versions == [1, 2]
    out = capsys.readouterr()
    key_b64 = json.loads(path.read_text())["keys"]["1"]
    assert key_b64 not in out.out + out.err


def test_keystore_open_needs_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(MissingKeyError):
        KeyStore.open()
    monkeypatch.setenv(ENV_VAR, b64e(new_key(KeyAlg.AES)))
    assert KeyStore.open().records() == []


def test_terminal_key_rotation_keeps_old_material_open(world, pan: str) -> None:  # type: ignore[no-untyped-def]
    plat, _, term = world
    old_kid, old_block = term.pin_block("1357", pan)
    old_pan = term.encrypt_pan(pan, "c-old")
    old_mac = term.mac_event(_event())
    for blob in plat.enroll_terminal("T-1", term.public_kex()):  # rotation: version 2
        term.install(blob)
    new_kid, _ = term.pin_block("1357", pan)
    assert (old_kid, new_kid) == ("tpk:T-1.v1", "tpk:T-1.v2")  # new work uses the newest
    assert term.encrypt_pan(pan, "c").key_id == "tpan:T-1.v2"
    # material made under version 1 still opens on the platform
    dst_id, translated = plat.translate_pin("T-1", "bank-a", old_kid, old_block, old_pan,
                                            "c-old")
    dst_key_id, dst_version = dst_id.rsplit(".v", 1)
    assert dst_key_id == "pin:bank-a" and translated != old_block
    provider_pin_key = plat.keys.key(dst_key_id, KeyUsage.PIN_ENC, version=int(dst_version))
    assert pin_module._decipher(provider_pin_key, translated, pan) == "1357"  # the same PIN
    plat.verify_terminal_mac("T-1", old_mac)
    plat.verify_terminal_mac("T-1", term.mac_event(_event()))


def _event():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from schemas.base import Event

    return Event(type="Pinged", schema_version=1, event_id="e" * 16, correlation_id="c",
                 occurred_at=datetime.now(UTC), producer="terminal:T-1")
