"""The platform storage key and the AEAD key store.

The storage key is versioned: a file (``cardbus keys init --path ...``, mode 0600) or the
environment (``CARDBUS_STORAGE_KEY``) holds one or more versions. New records are encrypted
under the newest version; records written under an older version still open. A missing key
raises ``MissingKeyError``: there is no default key.

Every stored key is a ``StoredKey`` record: AES-256-GCM ciphertext whose associated data binds
key id, usage, owner, key version and storage-key version, plus a key check value. A record
moved to another key id, usage or owner does not open. Records are plain pydantic models, so a
Faust table (or a file) can hold them; the clear key never leaves this module's callers in
``cardbus.crypto``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict

from cardbus.crypto.cache import ExpiringCache, NonceBudget
from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv, new_key
from cardbus.errors import ConfigError, CryptoError, KeyUsageError, MissingKeyError, UnwrapError

ENV_VAR = "CARDBUS_STORAGE_KEY"
_FILE_FORMAT = "cardbus-storage-key-v1"


def b64e(data: bytes) -> str:
    """URL-safe base64 with padding (matches ``schemas.base.B64``)."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Decode URL-safe base64."""
    return base64.urlsafe_b64decode(text.encode("ascii"))


class StorageKeyring:
    """Versioned platform storage keys (AES-256). The newest version encrypts new records."""

    def __init__(self, versions: Mapping[int, bytes]) -> None:
        if not versions:
            raise MissingKeyError("no storage key versions given")
        for v, key in versions.items():
            if len(key) != 32:
                raise ConfigError(f"storage key version {v} is not 32 bytes")
        self._aead = {v: AESGCM(k) for v, k in versions.items()}
        self.current = max(versions)
        self._budget = NonceBudget(f"storage key v{self.current}")

    @property
    def versions(self) -> list[int]:
        """The versions this keyring can open, oldest first."""
        return sorted(self._aead)

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[int, bytes, bytes]:
        """(version, nonce, ciphertext) under the newest version."""
        self._budget.spend()
        nonce = os.urandom(12)
        return self.current, nonce, self._aead[self.current].encrypt(nonce, plaintext, aad)

    def decrypt(self, version: int, nonce: bytes, ct: bytes, aad: bytes) -> bytes:
        """Open a record written under ``version``; ``UnwrapError`` if it does not open."""
        aead = self._aead.get(version)
        if aead is None:
            raise MissingKeyError(f"storage key version {version} is not loaded")
        try:
            return aead.decrypt(nonce, ct, aad)
        except InvalidTag:
            msg = "stored key does not open (tampered, or bound to another key)"
            raise UnwrapError(msg) from None

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def from_env(cls, value: str) -> StorageKeyring:
        """Parse ``CARDBUS_STORAGE_KEY``: ``<b64>`` or ``1:<b64>,2:<b64>``."""
        versions: dict[int, bytes] = {}
        for i, part in enumerate(p.strip() for p in value.split(",") if p.strip()):
            ver, _, key = part.rpartition(":")
            try:
                versions[int(ver) if ver else i + 1] = b64d(key)
            except ValueError as exc:
                raise ConfigError(f"{ENV_VAR} is not '<version>:<base64>,...'") from exc
        return cls(versions)

    @classmethod
    def from_file(cls, path: Path) -> StorageKeyring:
        """Load a key file written by ``init_storage_key_file``; refuse loose permissions."""
        if not path.exists():
            raise MissingKeyError(
                f"storage key file {path} not found: run `cardbus keys init --path {path}` "
                f"or set {ENV_VAR}"
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"storage key file {path} has mode {mode:o}; it must be 0600")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != _FILE_FORMAT:
                raise ValueError("unknown format")
            versions = {int(v): b64d(k) for v, k in data["keys"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"storage key file {path} is not a CardBus key file") from exc
        return cls(versions)

    @classmethod
    def load(cls, path: Path | None = None,
             env: Mapping[str, str] | None = None) -> StorageKeyring:
        """The keyring from ``path`` if given, else from the environment; never a default."""
        if path is not None:
            return cls.from_file(path)
        value = (os.environ if env is None else env).get(ENV_VAR)
        if not value:
            raise MissingKeyError(
                f"no platform storage key: set {ENV_VAR} or run `cardbus keys init --path ...`"
            )
        return cls.from_env(value)


def init_storage_key_file(path: Path, *, rotate: bool = False) -> int:
    """Create the storage key file (mode 0600), or add a new version with ``rotate``.

    Returns the newest version. Refuses to overwrite an existing file without ``rotate``.
    """
    versions: dict[int, bytes] = {}
    if path.exists():
        if not rotate:
            raise ConfigError(f"{path} already exists; use --rotate to add a new key version")
        StorageKeyring.from_file(path)  # checks permissions and format before we touch it
        data = json.loads(path.read_text())
        versions = {int(v): b64d(k) for v, k in data["keys"].items()}
    elif rotate:
        raise MissingKeyError(f"{path} does not exist: nothing to rotate")
    new_version = max(versions, default=0) + 1
    versions[new_version] = new_key(KeyAlg.AES, 32)
    body = json.dumps(
        {"format": _FILE_FORMAT, "current": new_version,
         "keys": {str(v): b64e(k) for v, k in sorted(versions.items())}},
        indent=1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return new_version


class StoredKey(BaseModel):
    """One key at rest: encrypted under the storage key, bound to id, usage, owner, version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    usage: KeyUsage
    owner: str
    version: int
    alg: KeyAlg
    kcv: str
    storage_version: int
    nonce: str
    ct: str
    status: Literal["active", "retired", "revoked"] = "active"
    """``retired``: opens what was made under it, makes nothing new; ``revoked``: never opens
    again (a compromised key). Not in the AAD: the record's owner may change it."""

    def aad(self) -> bytes:
        """The associated data the record's ciphertext is bound to."""
        return _aad(self.key_id, self.usage, self.owner, self.version, self.alg,
                    self.storage_version)


def _aad(key_id: str, usage: KeyUsage, owner: str, version: int, alg: KeyAlg,
         storage_version: int) -> bytes:
    return f"cardbus-key-v1|{key_id}|{usage.value}|{owner}|{version}|{alg.value}|" \
           f"{storage_version}".encode()


class KeyStore:
    """Keys by (key id, version), encrypted at rest; looked up by id and checked for usage.

    ``records()`` / ``load_records()`` move the encrypted records in and out (a Faust table,
    a file); the clear key bytes are only returned to the ``cardbus.crypto`` role facades.
    """

    def __init__(self, keyring: StorageKeyring, records: Iterable[StoredKey] = ()) -> None:
        self._keyring = keyring
        self._records: dict[tuple[str, int], StoredKey] = {}
        self._cache: ExpiringCache[tuple[str, int], bytes] = ExpiringCache()
        self.load_records(records)

    @classmethod
    def open(cls, path: Path | None = None, records: Iterable[StoredKey] = ()) -> KeyStore:
        """A key store under the storage key from ``path`` or ``CARDBUS_STORAGE_KEY``
        (``MissingKeyError`` if neither is there)."""
        return cls(StorageKeyring.load(path), records)

    def load_records(self, records: Iterable[StoredKey]) -> None:
        """Add records (e.g. read back from a table)."""
        for rec in records:
            self._records[(rec.key_id, rec.version)] = rec

    def records(self) -> list[StoredKey]:
        """Every record, encrypted, for persistence."""
        return list(self._records.values())

    def put(self, key_id: str, usage: KeyUsage, owner: str, alg: KeyAlg, key: bytes,
            *, version: int | None = None) -> StoredKey:
        """Store ``key``; without ``version`` it becomes the next version of ``key_id``."""
        if version is None:
            version = max((v for (k, v) in self._records if k == key_id), default=0) + 1
        existing = self._records.get((key_id, version))
        if existing is not None and existing.kcv != kcv(key, alg):
            raise CryptoError(f"key {key_id} v{version} already stored with another value")
        sv = self._keyring.current
        _, nonce, ct = self._keyring.encrypt(key, _aad(key_id, usage, owner, version, alg, sv))
        rec = StoredKey(key_id=key_id, usage=usage, owner=owner, version=version, alg=alg,
                        kcv=kcv(key, alg), storage_version=sv, nonce=b64e(nonce), ct=b64e(ct))
        self._records[(key_id, version)] = rec
        self._cache.put((key_id, version), key)
        return rec

    def generate(self, key_id: str, usage: KeyUsage, owner: str, alg: KeyAlg) -> StoredKey:
        """Generate a fresh key and store it as the next version of ``key_id``."""
        return self.put(key_id, usage, owner, alg, new_key(alg))

    def latest_version(self, key_id: str, default: int | None = None) -> int:
        """The newest active version of ``key_id``: what new work uses (retired and revoked
        versions are skipped)."""
        versions = [v for (k, v), rec in self._records.items()
                    if k == key_id and rec.status == "active"]
        if not versions:
            if default is not None:
                return default
            raise MissingKeyError(f"no active key {key_id} in the key store")
        return max(versions)

    def retire(self, key_id: str, version: int) -> StoredKey:
        """No new work under this version; what was made under it still opens."""
        return self._set_status(key_id, version, "retired")

    def revoke(self, key_id: str, version: int) -> StoredKey:
        """This version never opens again (its clear copy is dropped from the cache)."""
        self._cache.pop((key_id, version))
        return self._set_status(key_id, version, "revoked")

    def _set_status(self, key_id: str, version: int,
                    status: Literal["retired", "revoked"]) -> StoredKey:
        rec = self.record(key_id, version)
        if rec.status == "revoked":
            return rec  # revoked is final
        rec = rec.model_copy(update={"status": status})
        self._records[(key_id, version)] = rec
        return rec

    def record(self, key_id: str, version: int | None = None) -> StoredKey:
        """The encrypted record (no key bytes)."""
        v = self.latest_version(key_id) if version is None else version
        rec = self._records.get((key_id, v))
        if rec is None:
            raise MissingKeyError(f"no key {key_id} v{v} in the key store")
        return rec

    def __contains__(self, key_id: object) -> bool:
        return any(k == key_id for (k, _) in self._records)

    def key(self, key_id: str, usage: KeyUsage, *, owner: str | None = None,
            version: int | None = None) -> bytes:
        """Clear key bytes for use inside ``cardbus.crypto`` only; usage (and owner) checked."""
        rec = self.record(key_id, version)
        if rec.usage is not usage:
            raise KeyUsageError(f"key {key_id} has usage {rec.usage.value}, not {usage.value}")
        if owner is not None and rec.owner != owner:
            raise KeyUsageError(f"key {key_id} belongs to {rec.owner}, not {owner}")
        if rec.status == "revoked":
            raise KeyUsageError(f"key {key_id} v{rec.version} is revoked")
        cached = self._cache.get((rec.key_id, rec.version))
        if cached is not None:
            return cached
        key = self._keyring.decrypt(rec.storage_version, b64d(rec.nonce), b64d(rec.ct), rec.aad())
        if kcv(key, rec.alg) != rec.kcv:
            raise UnwrapError(f"key {key_id} v{rec.version} fails its key check value")
        return self._cache.put((rec.key_id, rec.version), key)

    def rewrap(self) -> int:
        """Re-encrypt every record under the newest storage key; returns how many moved."""
        moved = 0
        for (key_id, version), rec in list(self._records.items()):
            if rec.storage_version == self._keyring.current:
                continue
            key = self.key(key_id, rec.usage, version=version)
            self._records.pop((key_id, version))
            self.put(key_id, rec.usage, rec.owner, rec.alg, key, version=version)
            moved += 1
        return moved


def memory_keystore(_party: str = "") -> KeyStore:
    """A key store with a fresh random storage key, in memory only (software terminals, tests,
    the load generator)."""
    return KeyStore(StorageKeyring({1: new_key(KeyAlg.AES, 32)}))
