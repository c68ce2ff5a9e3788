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
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust import streams as faust_streams

from cardbus.errors import CardBusError
from cardbus.logs import get_logger
from cardbus.settings import settings as cardbus_settings
from schemas.base import Event, header
from schemas.deadletters import EventDeadLettered, original_fields
from streams import clients, codec, faust_patches, faust_trace
from streams.batching import Batches
from streams.topics import DEAD_LETTERS, TopicSettings, topic_spec

log = get_logger("streams.faust")


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs for a ``host:port[,host:port]`` bootstrap string."""
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


SESSION_TIMEOUT_S = 10.0
HEARTBEAT_S = 2.0


def make_app(app_id: str, *, party: str, bootstrap: str, datadir: Path,
             guarantee: str = "at_least_once", settings: TopicSettings | None = None,
             **extra: Any) -> faust.App:
    """A Faust app with CardBus's settings (rocksdb tables, idempotent producers, no web);
    Faust's internals patched (``streams.faust_patches``, once per process)."""
    applied = faust_patches.apply()
    if cardbus_settings().faust_trace:
        faust_trace.install()
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
        # a revoke waits for the records in flight and commits them (with the patch that
        # keeps their acknowledgements until then: see faust_patches.commit_on_revoke)
        stream_wait_empty="commit_on_revoke" in applied,
        # a worker that dies (kill -9, a host lost) holds its partitions until its session
        # expires: Faust's 60 s stalled them that long; heartbeats come from the consumer's
        # own thread, so a busy event loop does not miss them
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_S,
        broker_commit_every=100,
        broker_commit_interval=cardbus_settings().commit_interval_ms / 1000,
        producer_linger=cardbus_settings().producer_linger_ms / 1000,
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


def enter_event(event: Any) -> None:
    """Make ``event`` the current Faust event of this task (``None``: none), as Faust's own
    stream iteration does; a table write then sends its changelog record to that event's
    partition. Inside ``take_events`` Faust sets none for the agent (faust-streaming#497:
    "Cannot modify table outside of agent/stream"), so ``Batches`` enters each record itself.
    The context variable is Faust's (``faust.streams._current_event``, read by
    ``faust.streams.current_event``); tests/streams/test_batching_faust.py fails if it moves."""
    faust_streams._current_event.set(weakref.ref(event) if event is not None else None)


def batches(bus: Bus) -> Batches[Any]:
    """One app's batch runner: its real sender, Faust's current event, one lock for the app's
    batched agents (they share tables)."""
    return Batches(send=bus.send, enter=enter_event)


async def consume_batches(stream: Any, bus: Bus, handle: Handler, runner: Batches[Any], *,
                          max_records: int | None = None, within: float | None = None) -> None:
    """Run ``handle(message)`` on batches of up to ``max_records`` messages (or what came within
    ``within`` seconds; by default ``CARDBUS_BATCH_MAX`` and ``CARDBUS_BATCH_WITHIN_MS``)
    through ``runner`` (``streams.batching``): each touched table key is written once per
    batch, the outputs are sent together, a failing message becomes a dead letter and the rest
    of its batch goes on. Faust acknowledges a batch's messages after it. ``max_records`` 0:
    record by record (``consume``)."""
    s = cardbus_settings()
    max_records = s.batch_max if max_records is None else max_records
    within = s.batch_within_ms / 1000 if within is None else within
    if max_records <= 0:
        await consume(stream, bus, handle)
        return

    async def one(event: Any) -> None:
        await handle(event.message)

    async def failed(event: Any, exc: BaseException) -> None:
        await bus.dead_letter(event.message, exc)

    async for events in stream.take_events(max_records, within):
        await runner.run(events, one, failed)
