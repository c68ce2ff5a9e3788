"""Every patch CardBus puts on faust-streaming's internals (and on aiokafka's, under it), in one
place.

faust-streaming and aiokafka are pinned to exactly ``FAUST_VERSION`` and ``AIOKAFKA_VERSION``
(pyproject.toml). Each patch names the
upstream issue or pull request it answers, replaces one function, and records the SHA-256 of
the original's source: ``tests/streams/test_faust_patches.py`` fails when the installed Faust's
source of a patched function differs, so an upgrade cannot silently keep (or drop) a patch.
``apply()`` runs once per process, at app creation (``streams.faust_support.make_app``).

What was lost and why (measured with ``CARDBUS_FAUST_TRACE=1`` and ``cardbus bench chaos``, see
the issue notes):

- ``seek_before_resume``: after a rebalance, recovery resumed the stream partitions and let the
  fetcher deliver their records into the agents' queues *before* seeking them to the committed
  offsets, then cleared those queues. Records already delivered advanced the read offset; the
  ones cleared were never processed, and the refetched originals were dropped as "already
  read" or covered by a gap that counts as acknowledged: offsets were committed past records
  no agent had seen (faust-streaming/faust#596, #606; PR #707, unmerged).
- ``commit_on_revoke``: the consumer forgot the revoked partitions' acknowledgements before the
  app's revoke handler ran, so nothing acknowledged since the last commit was committed at a
  rebalance, and acknowledgements of in-flight records landed in fresh bookkeeping with no
  committed offset (no check at all). With ``stream_wait_empty=True`` the handler waits for the
  in-flight records and commits them; this patch makes it forget only after that.
- ``flush_all``: ``ProducerBuffer.flush`` returned after 0.1 s without progress, so a source
  offset could be committed (and a partition handed over) while the table writes it produced
  were still in the buffer: the next owner recovered the table without them.
- ``committed_mark``: a partition with no committed offset had none to check acknowledgements
  against; the position it is fetched from is its mark now (and offset 0 is a mark).
- ``metadata_backoff`` (aiokafka, under Faust): while a broker was down, the producer's sender
  forced a metadata update, saw it fail at once (connection refused) and forced the next with no
  pause: 2.9 million "Unable connect to node" lines (522 MB) in 13 minutes from one platform
  worker, a core spent on it, and reconnects fast enough that one was given the broker's own
  port as its local port (a TCP self-connect), so the broker could not bind it when it came
  back. A failed metadata update now waits ``retry_backoff_ms`` before it reports.

Kept from before: ``idempotent_producer``, ``short_fetch_wait``, ``commit_held_only``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiokafka.client import AIOKafkaClient
from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.functional import consecutive_numbers
from faust.utils.tracing import traced_from_parent_span
from mode import Service

from cardbus.errors import BrokerError
from cardbus.logs import get_logger
from cardbus.settings import settings
from streams.admin import wait_for_leaders

log = get_logger("streams.faust")

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

# How long the broker may hold a worker's fetch (CARDBUS_FETCH_MAX_WAIT_MS, default 10 ms).
# Faust hard-codes 1,500 ms. A worker's one fetch covers every partition it owns; measured here
# under load, the broker answered it only at the end of the wait (the round trip equalled the
# setting: 250-440 ms at 1,500, 21 ms at 20, 6 ms at 5), and the platform idled at 30% CPU with
# a 1.5 s backlog in Kafka. 10 ms costs at most 100 empty fetches a second when idle.

FLUSH_WARN_S = 10.0
FLUSH_STALL_S = 90.0
"""A producer buffer that makes no progress for this long (the broker's request timeout) is
stalled: the flush raises instead of letting the caller commit past unsent records."""


POSITION_TIMEOUT_S = 10.0


class RecoveryStuckError(BrokerError):
    """A step of table recovery did not finish within the broker request timeout."""

    code = "recovery-stuck"
    retriable = True


class ProducerStalledError(BrokerError):
    """The producer buffer made no progress for FLUSH_STALL_S: nothing is committed past it."""

    code = "producer-stalled"
    retriable = True


@dataclass(frozen=True)
class Patch:
    """One replaced function: where it lives, the digest of the source it replaces, why."""

    name: str
    owner: type
    attr: str
    source_sha256: str
    upstream: str
    make: Callable[[Callable[..., Any]], Callable[..., Any]]
    """Given the original function, the replacement."""


def source_sha256(fn: Callable[..., Any]) -> str:
    """SHA-256 of a function's source (decorators included)."""
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()


# -- kept from before --------------------------------------------------------------------------


def _idempotent_producer(original: Callable[..., Any]) -> Callable[..., Any]:
    def _settings_extra(self: Any) -> dict[str, Any]:
        return {**original(self), "acks": "all", "enable_idempotence": True}

    return _settings_extra


def _short_fetch_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = settings().fetch_max_wait_ms  # read when its fetcher starts
        consumer._fetch_min_bytes = settings().fetch_min_bytes  # CARDBUS_FETCH_MIN_BYTES
        return consumer

    return _create_worker_consumer


def _commit_held_only(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _commit(self: Any, offsets: Mapping[Any, int]) -> bool:
        # During a rebalance Faust may ask to commit only partitions the consumer thread no
        # longer holds; it filters them out and hands aiokafka 0.14 an empty dict, which raises
        # ValueError and crashed the worker (seen with 2 workers and 12 partitions). Nothing
        # to commit is not committed.
        assignment = self.assignment()
        if not any(tp in assignment for tp in offsets):
            return False
        return bool(await original(self, offsets))

    return _commit


# -- recovery: seek, then resume -----------------------------------------------------------------


def _seek_before_resume(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        """Call when active table recovery is completed.

        Patched order: the stream partitions are sought to their committed offsets *before*
        they are resumed, so no record fetched from the old position can reach an agent (the
        flow control is already resumed during changelog recovery), and the agents' queues are
        cleared before any stream record can be in them."""
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id "
                             f"{self.app.consumer_generation_id} param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=self.app.conf.broker_request_timeout)
        self.app.flow_control.clear()
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.log.dev("Resume stream partitions")
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    return on_recovery_completed


def _seek_before_resume_tableless(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    async def _resume_streams(self: Any, generation_id: int = 0) -> None:
        """The same order for an app without tables (``on_recovery_completed``)."""
        app = self.app
        consumer = app.consumer
        await app.on_rebalance_complete.send()
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=self.app.conf.broker_request_timeout)
            app.flow_control.clear()
            consumer.resume_partitions(
                {tp for tp in assignment if not self._is_changelog_tp(tp)})
        else:
            self.log.info("Resuming streams with empty assignment")
        self.completed.set()
        self.log.info("Resuming flow...")
        app.flow_control.resume()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    return _resume_streams


def _leader_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _build_highwaters(self: Any, consumer: Any, tps: Any, destination: Any,
                                title: str) -> None:
        """Patched: first waits (logging which) until every changelog partition has a leader;
        the end offsets of a leaderless partition were requested until the request timed out
        and recovery then stopped (``_wait``) or crashed the worker."""
        self.waiting_for_leaders = True
        try:
            await wait_for_leaders(
                ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker),
                [(tp.topic, tp.partition) for tp in tps], log=log,
                what=f"table recovery ({title} changelogs)")
        finally:
            self.waiting_for_leaders = False
        await original(self, consumer, tps, destination, title)

    return _build_highwaters


def _recovery_timeout(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    async def _wait(self: Any, coro: Any, timeout: Any = None) -> None:
        """Patched: a step that only ran out of time raises ``RecoveryStuckError`` (the worker
        stops, saying so); it was taken for "service stopped", recovery ended silently and the
        worker stayed up doing nothing. A step waiting for partition leaders has no timeout."""
        signal = self.signal_recovery_start
        task = asyncio.ensure_future(coro)
        try:
            while True:
                result = await self.wait_first(asyncio.shield(task), signal, timeout=timeout)
                if signal in result.done:
                    raise faust_recovery.RebalanceAgain()
                if task.done():
                    task.result()
                    return
                if self.should_stop or self._crashed.is_set():
                    raise faust_recovery.ServiceStopped()
                if getattr(self, "waiting_for_leaders", False):
                    continue
                raise RecoveryStuckError(
                    f"table recovery: a step took more than {timeout} s: {coro!r}")
        finally:
            if not task.done():
                task.cancel()

    return _wait


# -- offsets: a mark for every partition, commits on revoke ------------------------------------


def _committed_mark(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    async def perform_seek(self: Any) -> None:
        """Seek all partitions to their current committed position.

        Patched: a partition with no committed offset gets the position it will be fetched
        from as its mark, so ``_new_offset`` checks its acknowledgements from there too."""
        read_offset = self._read_offset
        committed = await self.seek_to_committed()
        read_offset.update({tp: offset if offset is not None and offset >= 0 else None
                            for tp, offset in committed.items()})
        marks: dict[Any, int] = {}
        for tp, offset in committed.items():
            if offset is not None and offset >= 0:
                marks[faust_consumer.ensure_TP(tp)] = offset
            else:
                with contextlib.suppress(TimeoutError):  # no leader: no mark, as before
                    position = await asyncio.wait_for(self.position(tp), POSITION_TIMEOUT_S)
                    if position is not None and position >= 0:
                        marks[faust_consumer.ensure_TP(tp)] = position
        self._committed_offset.update(marks)

    return perform_seek


def _head_check(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def _new_offset(self: Any, tp: Any) -> int | None:
        """The offset to commit for ``tp``: the end of the first run of consecutive
        acknowledged offsets, if that run starts at the committed mark.

        Patched: a mark of 0 is a mark (it was skipped as falsy). The head may still be one
        past the mark: Faust counts a gap from the mark + 1, and the record at the mark may be
        a transaction marker that no consumer sees."""
        acked = self._acked[tp]
        if not acked:
            return None
        max_offset = max(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:
            candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
            if candidates:
                filler: list[int] = []
                for entry in candidates:
                    filler.extend(range(entry.begin, entry.end))
                acked.extend(filler)
                gap_for_tp.chop(0, max(filler[-1], max_offset + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] - committed > 1:
            return None
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1

    return _new_offset


def _commit_on_revoke(original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    @Service.transitions_to(faust_consumer.CONSUMER_PARTITIONS_REVOKED)
    async def on_partitions_revoked(self: Any, revoked: set[Any]) -> None:
        """Call during rebalancing when partitions are being revoked.

        Patched: the app's handler runs first (it stops the flow, waits for the records in
        flight and commits what they acknowledged); only then are the revoked partitions'
        acknowledgements, gaps and offsets forgotten."""
        span = self.app._start_span_from_rebalancing("on_partitions_revoked")
        trace = traced_from_parent_span(span)
        with span:
            if self._active_partitions is not None:
                self._active_partitions.difference_update(revoked)
            self._paused_partitions.difference_update(revoked)
            await trace(self._on_partitions_revoked, partitions=revoked)(revoked)
            for tp in revoked:
                self._gap.pop(tp, None)
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._read_offset.pop(tp, None)
                self._committed_offset.pop(tp, None)

    return cast(Callable[..., Any], on_partitions_revoked)


# -- producer buffer: flush means everything ---------------------------------------------------


def _flush_all(original: Callable[..., Any]) -> Callable[..., Any]:
    async def flush(self: Any) -> None:
        """Flush all messages (draining the buffer).

        Patched: waits until every message buffered when it was called has been handed to
        the producer (it gave up after 0.1 s without a message sent, and the caller then
        committed past what was still buffered). Messages buffered later belong to later
        offsets and are not waited for (under load the buffer never empties). Raises
        ``ProducerStalledError`` when no message was sent for ``FLUSH_STALL_S``. (The
        threaded producer's buffer is another queue: left to the original.)"""
        if self.app is not None and self.app.conf.producer_threaded:
            await original(self)
            return
        queue = self.pending._queue
        if not queue:
            return
        last = queue[-1]
        progress = time.monotonic()
        warned = False
        while any(item is last for item in queue):
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
                progress = time.monotonic()
            except TimeoutError:
                stalled = time.monotonic() - progress
                if stalled >= FLUSH_STALL_S:
                    raise ProducerStalledError(
                        f"producer buffer sent nothing for {stalled:.0f}s "
                        f"({self.size} message(s) waiting)") from None
                if stalled >= FLUSH_WARN_S and not warned:
                    warned = True
                    log.warning("producer buffer not draining", waiting=self.size,
                                seconds=round(stalled, 1))

    return flush


def _metadata_backoff(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
        ok = bool(await original(self, cluster_metadata, topics))
        if not ok:  # no node answered (or none listed brokers): pause before the next try
            await asyncio.sleep(self._retry_backoff)
        return ok

    return _metadata_update


PATCHES: tuple[Patch, ...] = (
    Patch("idempotent_producer", faust_aiokafka.Producer, "_settings_extra",
          "a4c7bc41b63822236e4c9be1c49437d091f58c1b3a983eecabb7362a819aa8bd",
          "no setting for enable_idempotence (producer_acks alone allows duplicates on retry)",
          _idempotent_producer),
    Patch("short_fetch_wait", faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer",
          "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
          "fetch_max_wait_ms=1500 is hard-coded", _short_fetch_wait),
    Patch("commit_held_only", faust_aiokafka.AIOKafkaConsumerThread, "_commit",
          "932852ce7a23f658804273d0296de6affaa7d21c19311c279712c2fae91a3b03",
          "aiokafka 0.14 raises ValueError on an empty offset map", _commit_held_only),
    Patch("seek_before_resume", faust_recovery.Recovery, "on_recovery_completed",
          "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac",
          "faust-streaming/faust#596, #606 (a fix proposed in PR #707, unmerged)",
          _seek_before_resume),
    Patch("seek_before_resume_tableless", faust_recovery.Recovery, "_resume_streams",
          "d986a6710c1aca98f08c4c723fb3eadc5bf24576ad4eb9da3dd3eecedda2f24e",
          "faust-streaming/faust#216 (PR #217 kept resume before seek)",
          _seek_before_resume_tableless),
    Patch("leader_wait", faust_recovery.Recovery, "_build_highwaters",
          "91b4cc0d3724ae7bfc398e873684fc6f667ef8feb61a3b3314346ef11f2823de",
          "faust-streaming/faust#602, #44 (a leaderless changelog stalls recovery)",
          _leader_wait),
    Patch("recovery_timeout", faust_recovery.Recovery, "_wait",
          "ec7429b70176f8c688545780fdd6751714a1fa2ed247a9c0236adf9c99f16a53",
          "a timed-out recovery step reads as 'service stopped' (recovery quietly ends)",
          _recovery_timeout),
    Patch("committed_mark", faust_consumer.Consumer, "perform_seek",
          "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6",
          "faust-streaming/faust#596 (a partition never committed has no mark to check)",
          _committed_mark),
    Patch("head_check", faust_consumer.Consumer, "_new_offset",
          "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
          "faust-streaming/faust#596 (`if committed_offset:` skips a mark of 0)", _head_check),
    Patch("commit_on_revoke", faust_consumer.Consumer, "on_partitions_revoked",
          "d04b7ae72c6fc206924a2879d6c90dd383f3e8ba6f4b10a19ca99a921eb8f4db",
          "faust-streaming/faust#502, robinhood/faust#681 (acks forgotten before the revoke "
          "handler runs)", _commit_on_revoke),
    Patch("flush_all", faust_producer.ProducerBuffer, "flush",
          "26fbebb124ad9c9890f19b4615585cf3eda102b61203e6aa885d3fabfda9b157",
          "ProducerBuffer.flush gives up after 0.1 s without progress", _flush_all),
    Patch("metadata_backoff", AIOKafkaClient, "_metadata_update",
          "06dc51ed3e0d38b8d64100fd59012f399b2235c2f4804dfd142fcec397412fda",
          "aio-libs/aiokafka#267 (the 'Unable to update metadata' flood while a broker is "
          "down): the sender's loop forces metadata updates with no backoff while a leader is "
          "unknown", _metadata_backoff),
)
BY_NAME = {p.name: p for p in PATCHES}

_originals: dict[str, Callable[..., Any]] = {}


def original(name: str) -> Callable[..., Any]:
    """The function a patch replaces (the installed Faust's own, patched or not)."""
    patch = BY_NAME[name]
    return _originals.get(name) or getattr(patch.owner, patch.attr)


def selected(spec: str | None = None) -> tuple[str, ...]:
    """Patch names from ``spec`` (``all``, ``none`` or a comma list; default: the
    ``CARDBUS_FAUST_PATCHES`` setting)."""
    text = (spec if spec is not None else settings().faust_patches).strip()
    if text == "all":
        return tuple(BY_NAME)
    if text in ("none", ""):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise BrokerError(f"CARDBUS_FAUST_PATCHES: unknown patch(es) {unknown}; known: "
                          f"{', '.join(BY_NAME)}")
    return names


def apply(names: Iterable[str] | None = None) -> tuple[str, ...]:
    """Apply the named patches (default: the setting) once each; returns what is applied."""
    for name in selected() if names is None else tuple(names):
        if name in _originals:
            continue
        patch = BY_NAME[name]
        _originals[name] = getattr(patch.owner, patch.attr)
        setattr(patch.owner, patch.attr, patch.make(_originals[name]))
    return applied()


def applied() -> tuple[str, ...]:
    return tuple(n for n in BY_NAME if n in _originals)


def undo(names: Iterable[str] | None = None) -> None:
    """Put the originals back (tests)."""
    for name in tuple(_originals) if names is None else tuple(names):
        fn = _originals.pop(name, None)
        if fn is not None:
            patch = BY_NAME[name]
            setattr(patch.owner, patch.attr, fn)
