"""Reading a namespace for audit: read-only, its own consumer group, committing nothing.

Every topic whose name starts with ``<namespace>.`` (and the platform's ``platform-keys``
changelog, for terminal MAC keys) is assigned manually (no group join, so no rebalance of the
running system's groups), read ``read_committed`` from its start (or ``--from`` via
offsets-for-times) to the end offsets taken when the audit starts (or ``--to``). Topics that
hold state the re-derivation needs (provider requests, registrations, enrollments) are read
from their beginning even with ``--from``; their records before it are marked out of range.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from audit.model import Record
from audit.partial import CONTEXT_TOPICS, IDENTITY_TOPICS, owns
from audit.scan import provider_of, topic_types
from cardbus.errors import BrokerError
from streams import clients

STATE_TOPICS = ("providers", "provider-keys", "terminals", "terminal-keys", "key-history")

Progress = Callable[[int, int], None]


@dataclass
class Capture:
    """What was read."""

    records: list[Record] = field(default_factory=list)
    key_changelog: list[bytes | None] = field(default_factory=list)
    start: dict[str, int] = field(default_factory=dict)  # "topic/p" -> first audited offset
    stop: dict[str, int] = field(default_factory=dict)  # "topic/p" -> end (exclusive)
    group_id: str = ""
    partial: bool = False


def _needed(partitions: frozenset[int] | None, suffix: str, partition: int) -> bool:
    """Whether a part auditing ``partitions`` reads this topic partition (a changelog, an
    identity topic, or one it audits)."""
    return (not suffix or suffix in IDENTITY_TOPICS or suffix in CONTEXT_TOPICS
            or owns(partitions, suffix, partition))


def _nothing_readable(namespace: str, bootstrap: str, party: str,
                      unauthorized: set[str]) -> BrokerError:
    refused = sorted(t for t in unauthorized if t.startswith(namespace + "."))
    return BrokerError(
        f"nothing to audit: no topic of namespace {namespace} is readable at {bootstrap}"
        f" as {party}" + (f" ({len(refused)} refused: audit as that namespace's auditor"
                          " (CARDBUS_NAMESPACE) or --as operator)" if refused else ""))


def keys_changelog(namespace: str) -> str:
    """The platform's key-records table changelog (Faust: ``<app id>-<table>-changelog``)."""
    return f"{namespace}-platform-platform-keys-changelog"


async def _topic_partitions(consumer: AIOKafkaConsumer, namespace: str,
                            partitions: frozenset[int] | None
                            ) -> tuple[list[TopicPartition], set[str]]:
    """The namespace's event topics and the platform's key changelog, as far as this part of
    the audit needs them (all of them without ``partitions``); and the topics refused."""
    # fresh metadata (``topics()`` does not refresh what ``partitions_for_topic`` sees)
    cluster = await consumer._client.fetch_all_metadata()
    names = sorted(cluster.topics())
    prefix = namespace + "."
    wanted = [t for t in names if t.startswith(prefix)
              and topic_types(t[len(prefix):]) is not None]
    changelog = keys_changelog(namespace)
    if changelog in names:
        wanted.append(changelog)
    return [TopicPartition(t, p) for t in wanted
            for p in sorted(cluster.partitions_for_topic(t) or ())
            if _needed(partitions, t[len(prefix):] if t.startswith(prefix) else "", p)
            ], set(cluster.unauthorized_topics)


async def read_namespace(bootstrap: str, namespace: str, *, start_ms: int | None = None,
                         end_ms: int | None = None, progress: Progress | None = None,
                         idle_timeout: float = 30.0, party: str = "auditor",
                         partitions: frozenset[int] | None = None) -> Capture:
    """Read every topic of ``namespace`` (see the module docstring) as ``party`` (the
    namespace's auditor; the operator may audit any namespace); with ``partitions``, only
    what that part of a partition-parallel audit needs (``audit.partial``)."""
    group = f"{namespace}-audit-{uuid.uuid4().hex[:8]}"
    consumer = clients.consumer(
        bootstrap, party=party, group_id=group, client_id=group,
        isolation_level="read_committed", max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    cap = Capture(group_id=group, partial=start_ms is not None)
    try:
        prefix, changelog = namespace + ".", keys_changelog(namespace)
        tps, refused = await _topic_partitions(consumer, namespace, partitions)
        if not tps:  # never a clean report over nothing read
            raise _nothing_readable(namespace, bootstrap, party, refused)
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        if end_ms is not None:
            found = await consumer.offsets_for_times({tp: end_ms for tp in tps})
            end = {tp: (found[tp].offset if found[tp] is not None else end[tp]) for tp in tps}
        first = dict(begin)
        if start_ms is not None:
            found = await consumer.offsets_for_times({tp: start_ms for tp in tps})
            first = {tp: (found[tp].offset if found[tp] is not None else end[tp]) for tp in tps}
        seek_from: dict[TopicPartition, int] = {}
        for tp in tps:
            suffix = tp.topic[len(prefix):] if tp.topic.startswith(prefix) else ""
            state = tp.topic == changelog or suffix in STATE_TOPICS or provider_of(suffix)
            seek_from[tp] = begin[tp] if state else first[tp]
            consumer.seek(tp, seek_from[tp])
            if tp.topic != changelog:
                cap.start[f"{suffix}/{tp.partition}"] = first[tp]
                cap.stop[f"{suffix}/{tp.partition}"] = end[tp]
        total = sum(max(0, end[tp] - seek_from[tp]) for tp in tps)
        todo = {tp for tp in tps if seek_from[tp] < end[tp]}
        done = 0
        last_progress = time.monotonic()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset >= end[tp]:
                        break
                    done += 1
                    if tp.topic == changelog:
                        cap.key_changelog.append(m.value)
                        continue
                    cap.records.append(Record(
                        tp.topic[len(prefix):], tp.partition, m.offset, m.timestamp, m.key,
                        m.value, tuple((k, bytes(v)) for k, v in (m.headers or ())),
                        in_range=m.offset >= first[tp]))
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout:
                raise BrokerError(f"audit read stalled: {len(todo)} partition(s) not at their "
                                  f"end after {idle_timeout:.0f} s")
            if progress is not None:
                progress(done, total)
        return cap
    finally:
        await consumer.stop()
