"""Putting records on the real broker under a namespace, and copying a namespace with changes
(a "rewritten" topic: what tampering looks like to an auditor)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from audit.model import Record
from audit.scan import _STATIC, provider_of
from streams.topics import provider_requests_spec
from tests.kafka_auth import operator


def partitions_of(suffix: str) -> int:
    pid = provider_of(suffix)
    return provider_requests_spec(pid).partitions if pid else _STATIC[suffix].partitions


async def publish_records(bootstrap: str, namespace: str, records: Iterable[Record]) -> None:
    """Create the namespace's topics and publish ``records`` (same partitions, keys, times)."""
    records = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    topics = sorted({r.topic for r in records})
    admin = AIOKafkaAdminClient(**operator(bootstrap), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(f"{namespace}.{t}", partitions_of(t), 1)
                                       for t in topics])
    finally:
        await admin.close()
    await asyncio.sleep(0.5)
    producer = AIOKafkaProducer(**operator(bootstrap), bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(f"{namespace}.{r.topic}", r.value, key=r.key,
                                       partition=r.partition, timestamp_ms=r.timestamp_ms,
                                       headers=list(r.headers) or None)
                   for r in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def rewrite(records: list[Record], change: Callable[[Record], Record | None]) -> list[Record]:
    """A copy of ``records`` with ``change`` applied (None removes a record); offsets of each
    partition renumbered as a rewritten topic would have them."""
    out: list[Record] = []
    next_offset: dict[tuple[str, int], int] = {}
    for rec in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        new = change(rec)
        if new is None:
            continue
        tp = (new.topic, new.partition)
        off = next_offset.get(tp, 0)
        next_offset[tp] = off + 1
        out.append(Record(new.topic, new.partition, off, new.timestamp_ms, new.key, new.value,
                          new.headers, new.in_range))
    return out
