"""The storage keyring, the key file and the seals at their edges: each refusal's exact one-line
reason (the error class a caller catches too), the key file's fields, a rotation that finds
records already moved, the shortest MAC key, and a seal under another key id."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring, b64d, init_storage_key_file
from cardbus.crypto.signing import MacSealer, Signer, Verifier, seal_event, verify_event
from cardbus.errors import (
    ConfigError,
    MacInvalid,
    MissingKeyError,
    SignatureInvalid,
    UnwrapError,
)
from schemas.base import Seal
from schemas.samples import sample_event

# -- the storage keyring and its file ----------------------------------------------------------


def test_a_record_under_an_unloaded_or_other_storage_key_is_refused_by_name() -> None:
    ring = StorageKeyring({1: new_key(KeyAlg.AES, 32)})
    version, nonce, ct = ring.encrypt(b"k" * 32, b"aad")
    with pytest.raises(MissingKeyError) as missing:
        ring.decrypt(3, nonce, ct, b"aad")
    assert str(missing.value) == "storage key version 3 is not loaded"
    with pytest.raises(UnwrapError) as other:
        ring.decrypt(version, nonce, ct, b"other aad")
    assert str(other.value) == "stored key does not open (tampered, or bound to another key)"


def test_the_key_file_holds_its_format_current_version_and_32_byte_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "storage.key"  # parent folders are made
    assert init_storage_key_file(path) == 1
    assert init_storage_key_file(path, rotate=True) == 2
    data = json.loads(path.read_text())
    assert data["format"] == "cardbus-storage-key-v1" and data["current"] == 2
    assert sorted(data["keys"]) == ["1", "2"]
    assert {len(b64d(k)) for k in data["keys"].values()} == {32}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["storage.key"]


def test_key_file_refusals_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "storage.key"
    with pytest.raises(MissingKeyError) as nothing:
        init_storage_key_file(path, rotate=True)
    assert str(nothing.value) == f"{path} does not exist: nothing to rotate"
    init_storage_key_file(path)
    with pytest.raises(ConfigError) as exists:
        init_storage_key_file(path)
    assert str(exists.value) == f"{path} already exists; use --rotate to add a new key version"


def test_rewrap_goes_past_records_already_under_the_new_storage_key() -> None:
    v1, v2 = new_key(KeyAlg.AES, 32), new_key(KeyAlg.AES, 32)
    old = KeyStore(StorageKeyring({1: v1}))
    for _ in range(2):
        old.generate("pan:x", KeyUsage.PAN_ENC, "provider:x", KeyAlg.AES)
    moved_already = KeyStore(StorageKeyring({1: v1, 2: v2}))
    moved_already.generate("tmk:T-1", KeyUsage.MAC, "terminal:T-1", KeyAlg.HMAC)
    records = [*moved_already.records(), *old.records()]  # the moved one first
    assert [r.storage_version for r in records] == [2, 1, 1]
    rotated = KeyStore(StorageKeyring({1: v1, 2: v2}), records)
    assert rotated.rewrap() == 2
    assert {r.storage_version for r in rotated.records()} == {2}


# -- seals -----------------------------------------------------------------------------------


def test_a_mac_key_of_16_bytes_is_the_shortest_taken() -> None:
    MacSealer("tmk:T-1.v1", bytes(range(16)))
    with pytest.raises(MacInvalid) as short:
        MacSealer("tmk:T-1.v1", bytes(range(15)))
    assert str(short.value) == "MAC key too short"


def test_key_refusals_name_the_key() -> None:
    with pytest.raises(SignatureInvalid) as seed:
        Signer("sign:x.v1", bytes(31))
    assert str(seed.value) == "private key sign:x.v1 is not a 32-byte Ed25519 seed"
    with pytest.raises(SignatureInvalid) as public:
        Verifier("sign:x.v1", bytes(33))
    assert str(public.value) == "public key sign:x.v1 is not an Ed25519 key"
    signer = Signer.generate("sign:x.v1")
    with pytest.raises(SignatureInvalid) as length:
        signer.verifier.verify(bytes(63), b"data")
    assert str(length.value) == "signature by sign:x.v1 is not 64 bytes"
    mac = MacSealer("tmk:T-1.v1", bytes(range(32)))
    with pytest.raises(MacInvalid) as wrong:
        mac.verify(bytes(32), b"data")
    assert str(wrong.value) == "MAC under tmk:T-1.v1 does not verify"


def test_a_seal_under_another_key_id_is_refused_with_the_verifier_s_error() -> None:
    """Same algorithm, another key id: refused (both must match), as SignatureInvalid for an
    Ed25519 verifier and MacInvalid for a MAC key, naming both."""
    signer = Signer.generate("sign:a.v1")
    seal = signer.seal(b"data")
    renamed = Seal(alg="Ed25519", key_id="sign:a.v2", value=seal.value)
    with pytest.raises(SignatureInvalid) as sig:
        signer.verifier.verify_seal(renamed, b"data")
    assert str(sig.value) == "seal is Ed25519/sign:a.v2, expected Ed25519/sign:a.v1"
    mac = MacSealer("tmk:T-1.v1", bytes(range(32)))
    mseal = mac.seal(b"data")
    with pytest.raises(MacInvalid) as other:
        mac.verify_seal(mseal.model_copy(update={"key_id": "tmk:T-1.v2"}), b"data")
    assert str(other.value) == "seal is HMAC-SHA256/tmk:T-1.v2, expected HMAC-SHA256/tmk:T-1.v1"
    with pytest.raises(MacInvalid) as b64:
        mac.verify_seal(mseal.model_copy(update={"value": "not base64!"}), b"data")
    assert str(b64.value) == "seal value is not base64"


def test_verify_event_names_an_unknown_key_and_a_key_of_another_kind() -> None:
    signer = Signer.generate("sign:a.v1")
    event = seal_event(sample_event("PaymentRequested"), signer)
    with pytest.raises(SignatureInvalid) as unknown:
        verify_event(event, lambda _kid: None)
    assert str(unknown.value) == "unknown sealing key sign:a.v1"
    mac = MacSealer("sign:a.v1", bytes(range(32)))
    with pytest.raises(SignatureInvalid) as kind:
        verify_event(event, lambda _kid: mac)
    assert str(kind.value) == "key sign:a.v1 is HMAC-SHA256, seal says Ed25519"
