"""What every CardBus Faust app shares: settings, raw-bytes topics, dead letters, sending.

Agents read raw bytes and decode them with ``streams.codec`` themselves, so a message that does
not decode is not swallowed by Faust (a value codec error there arrives as ``None``) but goes to
the dead-letter topic with its reason and original bytes, and the offset moves on.

Producers are idempotent with ``acks=all`` (Faust's own default is neither), and the processing
guarantee is a setting: ``at_least_once`` (the default; every consumer is idempotent by event id
in its tables) or ``exactly_once`` on top.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from cardbus.errors import CardBusError
from cardbus.logs import get_logger
from schemas.base import Event, header
from schemas.deadletters import EventDeadLettered, original_fields
from streams import clients, codec
from streams.topics import DEAD_LETTERS, TopicSettings, topic_spec

log = get_logger("streams.faust")


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs for a ``host:port[,host:port]`` bootstrap string."""
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


_patched = False


FETCH_MAX_WAIT_MS = 10
"""How long the broker may hold a worker's fetch. Faust hard-codes 1,500 ms. A worker's one
fetch covers every partition it owns; measured here under load, the broker answered it only
at the end of the wait (the round trip equalled the setting: 250-440 ms at 1,500, 21 ms at 20,
6 ms at 5), and the platform idled at 30% CPU with a 1.5 s backlog in Kafka. 10 ms costs at
most 100 empty fetches a second when idle."""


def patch_faust_clients() -> None:
    """Make every Faust producer idempotent with acks=all, transactional or not; let the
    broker hold a worker's fetch for ``FETCH_MAX_WAIT_MS`` only; skip a commit that has no
    partition the consumer still holds."""
    global _patched
    if _patched:
        return
    original = faust_aiokafka.Producer._settings_extra

    def settings_extra(self: Any) -> dict[str, Any]:
        return {**original(self), "acks": "all", "enable_idempotence": True}

    faust_aiokafka.Producer._settings_extra = settings_extra  # type: ignore[method-assign]
    make_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

    def worker_consumer(self: Any, transport: Any) -> Any:
        consumer = make_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when its fetcher starts
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = (  # type: ignore[method-assign]
        worker_consumer)
    commit = faust_aiokafka.AIOKafkaConsumerThread._commit

    async def commit_assigned(self: Any, offsets: Any) -> bool:
        # During a rebalance Faust may ask to commit only partitions the consumer thread no
        # longer holds; it filters them out and hands aiokafka 0.14 an empty dict, which raises
        # ValueError and crashed the worker (seen with 2 workers and 12 partitions). Nothing
        # to commit is not committed.
        assignment = self.assignment()
        if not any(tp in assignment for tp in offsets):
            return False
        return bool(await commit(self, offsets))

    faust_aiokafka.AIOKafkaConsumerThread._commit = commit_assigned  # type: ignore[method-assign]
    _patched = True


def make_app(app_id: str, *, party: str, bootstrap: str, datadir: Path,
             guarantee: str = "at_least_once", settings: TopicSettings | None = None,
             **extra: Any) -> faust.App:
    """A Faust app with CardBus's settings (rocksdb tables, idempotent producers, no web)."""
    patch_faust_clients()
    settings = settings or TopicSettings.from_env()
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=broker_urls(bootstrap),
        store="rocksdb://",
        datadir=str(datadir),
        processing_guarantee=guarantee,
        producer_acks=-1,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        stream_wait_empty=False,
        broker_commit_every=100,
        broker_commit_interval=0.5,
        producer_linger=0.002,
        table_standby_replicas=0,
        **{**clients.faust_connection(party, bootstrap), **extra},
    )


class Bus:
    """Sending encoded events and dead letters from inside a Faust app."""

    def __init__(self, app: faust.App, producer: str) -> None:
        self.app = app
        self.producer = producer
        self._topics: dict[str, Any] = {}

    def topic(self, name: str) -> Any:
        t = self._topics.get(name)
        if t is None:
            spec = topic_spec(name)
            t = self._topics[name] = self.app.topic(
                name, key_serializer="raw", value_serializer="raw",
                partitions=spec.partitions, internal=False)
        return t

    async def send(self, topic: str, key: str | None, event: Event, *,
                   partition: int | None = None) -> None:
        await self.topic(topic).send(
            key=key.encode() if key is not None else None,
            value=codec.encode(event, topic=topic), partition=partition)

    async def dead_letter(self, message: Any, exc: BaseException) -> None:
        """Set ``message`` aside with the reason (never raises)."""
        code = exc.code if isinstance(exc, CardBusError) else "internal"
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, CardBusError):
            log.error("unexpected error, message dead-lettered", topic=message.topic,
                      partition=message.partition, offset=message.offset,
                      error=type(exc).__name__, trace=traceback.format_exc(limit=5))
        else:
            log.warning("message dead-lettered", topic=message.topic,
                        partition=message.partition, offset=message.offset, code=code,
                        reason=reason)
        value = message.value if isinstance(message.value, bytes | bytearray) else b""
        key = bytes(message.key) if isinstance(message.key, bytes | bytearray) else None
        ev = EventDeadLettered(
            **header(self.producer, f"{message.topic}:{message.partition}"), reason=reason[:1000],
            error_code=code[:64], field=getattr(exc, "field", None),
            original_topic=message.topic, original_partition=message.partition,
            original_offset=message.offset, **original_fields(bytes(value), key))
        try:
            await self.send(DEAD_LETTERS.name, message.topic, ev)
        except Exception:  # a dead letter that cannot be sent is logged, never raised
            log.exception("could not send dead letter", topic=message.topic,
                          offset=message.offset)


Handler = Callable[[Any], Awaitable[None]]


async def consume(stream: Any, bus: Bus, handle: Handler) -> None:
    """Run ``handle(message)`` for each message; any failure becomes a dead letter, the agent
    keeps going and the offset moves on."""
    async for event in stream.events():
        message = event.message
        try:
            await handle(message)
        except Exception as exc:  # noqa: BLE001 - nothing may stop the agent
            await bus.dead_letter(message, exc)
