"""State every worker of an app needs in full, read from the tables' own changelog topics.

A Faust table is partitioned: a worker sees the keys of the partitions it owns. Routes,
terminal records and key records are needed by every platform worker, whichever partition a
payment lands on. Faust's GlobalTable is meant for that, but did not stay in sync across two
workers here (nor in Faust's issue tracker: robinhood/faust#716, #541). So each table is written
as an ordinary Faust table by the worker that owns the source partition, and every worker keeps
an in-memory copy by reading the table's changelog topic, all partitions, from the beginning,
without a consumer group. Reads wait until the copy has caught up with the changelog's end as it
was at start; a worker's own writes are visible to it at once, and stay so: the changelog
brings them back later, after the older values of the same key, and an older value must not
shadow a newer local write meanwhile (it did: a provider's route came back without its keys for
a moment, and terminals enrolled in that moment got a key set without the provider).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

from aiokafka import TopicPartition

from cardbus.logs import get_logger
from streams import clients

log = get_logger("streams.replica")


class Replicated(MutableMapping[str, Any]):
    """A dict-like view: writes go to the Faust table (and the copy), reads to the copy."""

    def __init__(self, table: Any, changelog: str, partitions: int) -> None:
        self.table = table
        self.changelog = changelog
        self.partitions = partitions
        self.data: dict[str, Any] = {}
        # local writes the changelog has not brought back yet, oldest first (None: deleted)
        self.unechoed: dict[str, list[Any]] = {}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[key] = value
        self.data[key] = value
        self.unechoed.setdefault(key, []).append(value)

    def __delitem__(self, key: str) -> None:
        del self.table[key]
        del self.data[key]
        self.unechoed.setdefault(key, []).append(None)

    def apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        """One changelog record. While this worker has local writes of the key in flight, a
        record that is one of them only retires it and those before it (the copy already
        holds the newest); any other value is another writer's (a new owner of the partition)
        and wins."""
        if raw_key is None:
            return
        key = json.loads(raw_key)
        value = None if raw_value is None else json.loads(raw_value)
        mine = self.unechoed.get(key)
        if mine and value in mine:
            del mine[:mine.index(value) + 1]
            if not mine:
                del self.unechoed[key]
            return
        self.unechoed.pop(key, None)
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


class Replica:
    """Keeps several ``Replicated`` copies current from their changelog topics."""

    def __init__(self, bootstrap: str, tables: list[Replicated], *, party: str) -> None:
        self.bootstrap = bootstrap
        self.party = party
        self.by_topic = {t.changelog: t for t in tables}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = clients.consumer(self.bootstrap, party=self.party)
        await consumer.start()
        try:
            tps = [TopicPartition(t.changelog, p) for t in self.by_topic.values()
                   for p in range(t.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    table = self.by_topic[tp.topic]
                    for m in messages:
                        table.apply(m.key, m.value)
                if not self.ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        self.ready.set()
                        log.info("replica caught up", tables=len(self.by_topic))
        finally:
            await consumer.stop()
