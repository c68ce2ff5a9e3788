"""Deciding records in batches: each touched table key written once per batch, every output
sent together, one bad record set aside without losing the batch.

An agent takes records in batches (count- and time-bounded: ``stream.take_events``). The
handlers stay per record and see their tables through ``Scoped`` mappings: while a batch runs in
the agent's task, reads see the batch's writes first (``Overlay``) and writes stay in the batch;
outside a batch (unit tests, unbatched agents) a ``Scoped`` table is the table itself. Sends go
through a ``ScopedSend``: into the batch's ``Outbox`` during a batch, straight out otherwise.

Each record runs on a savepoint of the batch (``Overlay.child``, its own outbox): if its handler
raises, the record's writes and sends are dropped (it becomes a dead letter) and the batch goes
on; if it succeeds they join the batch. At the end ``Batches.run`` writes each touched key once
(one changelog record per key per batch, not per write), each under the record that last wrote
it (``enter``: Faust sends a table write's changelog record to the partition of the *current
event*, and inside ``take_events`` there is none: faust-streaming#497), then sends the outputs
in order, then the dead letters.

Atomicity: the batch holds ``lock`` (shared by the agents of one app that write the same
tables) from its first read to its last table write, so two agents never interleave a
read-modify-write of one key (the unbatched path had no await between a handler's read and its
write; a batch must not open that window either).

Nothing here imports Kafka or Faust; ``streams.faust_support.consume_batches`` runs it inside an
agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_DELETED: Any = object()


class Overlay(MutableMapping[K, V], Generic[K, V]):
    """A write buffer over a mapping: reads see the buffer first, then ``base``."""

    def __init__(self, base: MutableMapping[K, V]) -> None:
        self.base = base
        self.writes: dict[K, V] = {}

    def __getitem__(self, key: K) -> V:
        if key in self.writes:
            value = self.writes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: K, default: Any = None) -> Any:  # faster than the mixin's try/except
        if key in self.writes:
            value = self.writes[key]
            return default if value is _DELETED else value
        return self.base.get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        self.writes[key] = value

    def __delitem__(self, key: K) -> None:
        if key not in self and key not in self.writes:
            raise KeyError(key)
        self.writes[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self.writes:
            return self.writes[key] is not _DELETED
        return key in self.base

    def __iter__(self) -> Iterator[K]:
        seen = set()
        for key, value in self.writes.items():
            seen.add(key)
            if value is not _DELETED:
                yield key
        for key in list(self.base):
            if key not in seen:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def child(self) -> Overlay[K, V]:
        """A savepoint: writes go to the child until ``merge`` (or are dropped)."""
        return Overlay(self)

    def merge(self) -> None:
        """Move this overlay's writes into its base (a child into its parent overlay)."""
        base = self.base
        for key, value in self.writes.items():
            if value is _DELETED:
                if isinstance(base, Overlay):
                    base.writes[key] = _DELETED
                else:
                    base.pop(key, None)
            else:
                base[key] = value
        self.writes.clear()

    def flush(self) -> int:
        """Write every buffered key to ``base`` once; returns how many keys were written."""
        written = len(self.writes)
        self.merge()
        return written


Send = Callable[[str, Any, Any], Awaitable[None]]


@dataclass
class Outbox:
    """Sends collected during a record (and a batch), made later in order."""

    items: list[tuple[str, Any, Any]] = field(default_factory=list)

    async def __call__(self, topic: str, key: Any, event: Any) -> None:
        self.items.append((topic, key, event))

    def extend(self, other: Outbox) -> None:
        self.items.extend(other.items)
        other.items.clear()

    async def drain(self, send: Send) -> int:
        """Send everything collected, in order; returns how many."""
        items, self.items = self.items, []
        for topic, key, event in items:
            await send(topic, key, event)
        return len(items)


# -- batches over scoped tables -------------------------------------------------------------


class _Layer:
    """The overlays and outbox of a batch, or of one record's savepoint within it."""

    def __init__(self, parent: _Layer | None = None) -> None:
        self.parent = parent
        self.overlays: dict[int, tuple[Scoped, Overlay[Any, Any]]] = {}
        self.outbox = Outbox()

    def view(self, table: Scoped) -> Overlay[Any, Any]:
        hit = self.overlays.get(id(table))
        if hit is None:
            base: MutableMapping[Any, Any] = (self.parent.view(table) if self.parent
                                              else table.base)
            hit = self.overlays[id(table)] = (table, Overlay(base))
        return hit[1]


_CURRENT: ContextVar[_Layer | None] = ContextVar("cardbus_batch", default=None)
"""The layer of the batch running in this task (each asyncio task has its own context, so two
agents' batches never see each other's)."""


class Scoped(MutableMapping[Any, Any]):
    """A table as the running batch sees it (its overlay), or the table itself outside one."""

    def __init__(self, base: MutableMapping[Any, Any]) -> None:
        self.base = base

    def _target(self) -> MutableMapping[Any, Any]:
        layer = _CURRENT.get()
        return self.base if layer is None else layer.view(self)

    def __getitem__(self, key: Any) -> Any:
        return self._target()[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self._target().get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._target()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._target()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._target()))

    def __len__(self) -> int:
        return len(self._target())


class ScopedSend:
    """``send(topic, key, event)``: into the running batch's outbox, or straight out."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def __call__(self, topic: str, key: Any, event: Any) -> None:
        layer = _CURRENT.get()
        if layer is None:
            await self.send(topic, key, event)
        else:
            await layer.outbox(topic, key, event)


R = TypeVar("R")


@dataclass
class BatchReport:
    """What one batch did."""

    records: int = 0
    failed: int = 0
    keys_written: int = 0
    sent: int = 0


@dataclass
class Batches(Generic[R]):
    """Runs batches of records through a per-record handler over ``Scoped`` tables.

    ``enter(record)`` makes ``record`` the current one (for Faust: its event, so a table write
    goes to the record's changelog partition); it is called around each record's handler and
    before each key's write at the end of the batch."""

    send: Send
    enter: Callable[[R | None], None] = lambda _record: None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self, records: Sequence[R], handle: Callable[[R], Awaitable[None]],
                  on_error: Callable[[R, BaseException], Awaitable[None]]) -> BatchReport:
        report = BatchReport(records=len(records))
        failed: list[tuple[R, BaseException]] = []
        batch = _Layer()
        writer: dict[tuple[int, Any], R] = {}  # (table, key) -> the record that wrote it last
        async with self.lock:
            for record in records:
                layer = _Layer(batch)
                token = _CURRENT.set(layer)
                self.enter(record)
                try:
                    await handle(record)
                except Exception as exc:  # noqa: BLE001 - a bad record never sinks the batch
                    failed.append((record, exc))
                    continue
                finally:
                    _CURRENT.reset(token)
                for tid, (_table, overlay) in layer.overlays.items():
                    for key in overlay.writes:
                        writer[(tid, key)] = record
                    overlay.merge()  # into the batch's overlay of the same table
                batch.outbox.extend(layer.outbox)
            report.keys_written = self._write(batch, writer)
            self.enter(None)
        report.sent = await batch.outbox.drain(self.send)
        report.failed = len(failed)
        for record, error in failed:
            await on_error(record, error)
        return report

    def _write(self, batch: _Layer, writer: dict[tuple[int, Any], R]) -> int:
        """Each touched key once into its table, under the record that wrote it last."""
        written = 0
        for tid, (table, overlay) in batch.overlays.items():
            for key, value in overlay.writes.items():
                self.enter(writer[(tid, key)])
                if value is _DELETED:
                    table.base.pop(key, None)
                else:
                    table.base[key] = value
                written += 1
            overlay.writes.clear()
        return written
