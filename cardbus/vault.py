"""Each party's sealed key store on disk: the platform, each provider, each terminal.

A party's folder (``<state>/parties/<party>/``) holds its storage key file (0600, made by an
explicit ``create``; a missing one fails loudly) and its key store file: the key records, each
encrypted under that storage key (``cardbus.crypto.keystore``). ``CARDBUS_STORAGE_KEY_<PARTY>``
(party upper-cased, ``-``/``:`` as ``_``) gives the storage key from the environment instead.

A party's bus credentials (its SCRAM password for Kafka) are sealed secrets in the same folder
(``secrets.json``): AES-256-GCM under the party's storage key, bound to party and name, read only
by the party's own processes (``open_secret``), never passed on a command line.

Parties: ``platform``, ``provider-<id>``, ``terminal-<id>`` (one terminal's key store), and the
bus-only parties ``terminal`` (the terminal fleet's bus identity), ``auditor`` and ``operator``.

Public identities (the platform's verify key) go in ``<state>/directory.json``: public keys
only, what a key ceremony would hand each party.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cardbus.crypto.keystore import KeyStore, StorageKeyring, StoredKey, b64d, b64e
from cardbus.crypto.keystore import init_storage_key_file as _init_key_file
from cardbus.crypto.signing import Verifier
from cardbus.errors import ConfigError, MissingKeyError
from cardbus.paths import state_dir

_PARTY = re.compile(r"^(platform|terminal|auditor|operator|provider-[a-z0-9\-]{1,32}"
                    r"|terminal-[A-Za-z0-9\-]{1,32})$")
_SECRET_FORMAT = "cardbus-secret-v1"  # noqa: S105 - a format tag, not a secret


def party_dir(party: str, home: Path | None = None) -> Path:
    """The folder of ``party`` (``platform``, ``provider-bank-a``, ``terminal-T1``)."""
    if not _PARTY.match(party):
        raise ConfigError(f"not a party name: {party!r}")
    return (home or state_dir()) / "parties" / party


def storage_key_env(party: str) -> str:
    """The environment variable that may hold ``party``'s storage key."""
    return "CARDBUS_STORAGE_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", party).upper()


_env_name = storage_key_env


def create(party: str, home: Path | None = None) -> bool:
    """Create ``party``'s storage key file if it has none; True if one was made."""
    path = party_dir(party, home) / "storage-key.json"
    if path.exists() or os.environ.get(_env_name(party)):
        return False
    _init_key_file(path)
    return True


def keyring(party: str, home: Path | None = None) -> StorageKeyring:
    """``party``'s storage keyring: from its environment variable or its key file."""
    value = os.environ.get(_env_name(party))
    if value:
        return StorageKeyring.from_env(value)
    path = party_dir(party, home) / "storage-key.json"
    if not path.exists():
        raise MissingKeyError(
            f"{party} has no storage key ({path}): run `cardbus setup` first, or set "
            f"{_env_name(party)}")
    return StorageKeyring.from_file(path)


class FileKeyStore(KeyStore):
    """A ``KeyStore`` whose encrypted records live in the party's ``keystore.json``."""

    def __init__(self, party: str, home: Path | None = None) -> None:
        self.path = party_dir(party, home) / "keystore.json"
        records = []
        if self.path.exists():
            records = [StoredKey.model_validate(r) for r in json.loads(self.path.read_text())]
        super().__init__(keyring(party, home), records)
        self._saved = len(records)

    def save(self) -> None:
        """Write every (encrypted) record back, atomically, 0600."""
        body = json.dumps([r.model_dump(mode="json") for r in self.records()], indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, self.path)
        self._saved = len(self.records())

    @property
    def dirty(self) -> bool:
        return len(self.records()) != self._saved


# -- sealed secrets (bus credentials) -----------------------------------------------------------


def _secrets_path(party: str, home: Path | None) -> Path:
    return party_dir(party, home) / "secrets.json"


def _secret_aad(party: str, name: str, storage_version: int) -> bytes:
    return f"{_SECRET_FORMAT}|{party}|{name}|{storage_version}".encode()


def seal_secret(party: str, name: str, value: str, home: Path | None = None) -> None:
    """Keep ``value`` as ``party``'s secret ``name``, encrypted under its storage key (0600,
    written atomically; replaces an older value)."""
    ring = keyring(party, home)
    path = _secrets_path(party, home)
    data = json.loads(path.read_text()) if path.exists() else {}
    version, nonce, ct = ring.encrypt(value.encode(), _secret_aad(party, name, ring.current))
    data[name] = {"storage_version": version, "nonce": b64e(nonce), "ct": b64e(ct)}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def has_secret(party: str, name: str, home: Path | None = None) -> bool:
    """Whether ``party`` keeps a secret called ``name``."""
    path = _secrets_path(party, home)
    return path.exists() and name in json.loads(path.read_text())


def open_secret(party: str, name: str, home: Path | None = None) -> str:
    """``party``'s secret ``name`` in clear (``MissingKeyError`` if it has none)."""
    path = _secrets_path(party, home)
    entry = json.loads(path.read_text()).get(name) if path.exists() else None
    if entry is None:
        raise MissingKeyError(f"{party} has no secret {name!r} in {path}: run "
                              "`cardbus broker start` (or `cardbus credentials ensure`) first")
    version = int(entry["storage_version"])
    clear = keyring(party, home).decrypt(version, b64d(entry["nonce"]), b64d(entry["ct"]),
                                         _secret_aad(party, name, version))
    return clear.decode()


# -- the public directory ---------------------------------------------------------------------


def _directory_path(home: Path | None) -> Path:
    return (home or state_dir()) / "directory.json"


def publish_identity(name: str, verifier: Verifier, home: Path | None = None) -> None:
    """Record ``name``'s public identity key in the directory."""
    path = _directory_path(home)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"key_id": verifier.key_id, "public_key": b64e(verifier.public_bytes())}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def identity(name: str, home: Path | None = None) -> Verifier:
    """``name``'s public identity key from the directory (``MissingKeyError`` if absent)."""
    path = _directory_path(home)
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = data.get(name)
    if entry is None:
        raise MissingKeyError(f"no public identity for {name} in {path}: run `cardbus setup`")
    return Verifier(entry["key_id"], b64d(entry["public_key"]))
