"""A key store whose records live in a Faust table as well as in the party's file.

The party's own long-lived keys (its identity) come from its sealed file (``cardbus.vault``);
keys it accepts or makes while running (provider key blocks, terminal keys) go to a table,
encrypted exactly as at rest, so every worker of the party sees them and a restarted worker
recovers them from the changelog. Records are immutable (a new version is a new record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from cardbus.crypto.keys import KeyAlg, KeyUsage
from cardbus.crypto.keystore import KeyStore, StorageKeyring, StoredKey
from cardbus.errors import MissingKeyError


def record_key(key_id: str, version: int) -> str:
    """The table key of one record."""
    return f"{key_id}#v{version}"


class RecordTable(Protocol):
    """What the key store reads of its table: a Faust table, or the platform's replica."""

    def values(self) -> Iterable[Any]: ...


class TableKeyStore(KeyStore):
    """``KeyStore`` that falls back to (and writes new records into) a table."""

    def __init__(self, keyring: StorageKeyring, records: Iterable[StoredKey],
                 table: RecordTable,
                 reload: Callable[[], Iterable[StoredKey]] | None = None) -> None:
        self._table = table
        self._reload = reload
        self._new: list[StoredKey] = []
        super().__init__(keyring, records)

    def refresh(self) -> None:
        """Load every record the table holds (other workers may have added some), and the
        party's file again (a key ceremony may have added a KBPK while running)."""
        if self._reload is not None:
            self.load_records(self._reload())
        self.load_records(StoredKey.model_validate(v) for v in list(self._table.values()))

    def put(self, key_id: str, usage: KeyUsage, owner: str, alg: KeyAlg, key: bytes,
            *, version: int | None = None) -> StoredKey:
        rec = super().put(key_id, usage, owner, alg, key, version=version)
        self._new.append(rec)
        return rec

    def flush(self) -> list[tuple[str, dict[str, Any]]]:
        """The records made since the last flush, as (table key, value) to write."""
        out = [(record_key(r.key_id, r.version), r.model_dump(mode="json")) for r in self._new]
        self._new.clear()
        return out

    def latest_version(self, key_id: str, default: int | None = None) -> int:
        try:
            return super().latest_version(key_id)
        except MissingKeyError:
            self.refresh()
            return super().latest_version(key_id, default)

    def record(self, key_id: str, version: int | None = None) -> StoredKey:
        try:
            return super().record(key_id, version)
        except MissingKeyError:
            self.refresh()
            return super().record(key_id, version)
