"""Instrumentation of Faust's offset bookkeeping, for diagnosis (``CARDBUS_FAUST_TRACE=1``).

Wrappers only (each calls the function it wraps and changes nothing): they log the records
cleared from the agents' queues, the gaps taken as acknowledged, every commit with the producer
buffer's size at that moment, acknowledgements that arrive for a partition with no committed
mark, the seeks to the committed offsets and the changelog end offsets a recovery reads up to.
``cardbus bench chaos --trace`` turns it on in the workers; the issue notes quote its lines.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils import queues as mode_queues

from cardbus.logs import get_logger

log = get_logger("faust.trace")
_installed = False


def _ranges(offsets: dict[Any, list[int]]) -> dict[str, str]:
    out = {}
    for tp, values in offsets.items():
        values = sorted(values)
        out[f"{tp.topic}:{tp.partition}"] = (f"{values[0]}-{values[-1]} ({len(values)})"
                                             if values else "")
    return out


def _wrap(owner: type, attr: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
          ) -> None:
    original = getattr(owner, attr)
    setattr(owner, attr, functools.wraps(original)(make(original)))


def _clear(original: Callable[..., Any]) -> Callable[..., Any]:
    def clear(self: Any) -> None:
        cleared: dict[Any, list[int]] = defaultdict(list)
        for queue in list(self._queues):
            for item in list(getattr(queue, "_queue", ())):
                message = getattr(item, "message", None)
                if message is not None:
                    cleared[message.tp].append(message.offset)
        if cleared:
            log.warning("faust queues cleared", records=_ranges(cleared))
        original(self)

    return clear


def _add_gap(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning("faust gap taken as acked", tp=f"{tp.topic}:{tp.partition}",
                    first=offset_from, last=offset_to,
                    committed=self._committed_offset.get(tp))
        await original(self, tp, offset_from, offset_to)

    return _add_gap


def _commit_offsets(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True
                              ) -> bool:
        producer = self.app._producer
        buffered = producer.buffer.size if producer is not None else 0
        before = {f"{tp.topic}:{tp.partition}": self._committed_offset.get(tp)
                  for tp in offsets}
        done = bool(await original(self, offsets, start_new_transaction))
        log.info("faust commit", offsets={f"{tp.topic}:{tp.partition}": o
                                          for tp, o in offsets.items()},
                 before=before, buffered_at_start=buffered, committed=done)
        return done

    return _commit_offsets


def _ack(original: Callable[..., Any]) -> Callable[..., Any]:
    def ack(self: Any, message: Any) -> bool:
        tp = message.tp
        if not message.acked and self._committed_offset.get(tp) is None:
            log.warning("faust ack with no committed mark", tp=f"{tp.topic}:{tp.partition}",
                        offset=message.offset, assigned=tp in self.assignment())
        return bool(original(self, message))

    return ack


def _perform_seek(original: Callable[..., Any]) -> Callable[..., Any]:
    async def perform_seek(self: Any) -> None:
        before = {f"{tp.topic}:{tp.partition}": off for tp, off in self._read_offset.items()}
        await original(self)
        log.info("faust seek to committed", read_before=before,
                 committed={f"{tp.topic}:{tp.partition}": off
                            for tp, off in self._committed_offset.items()})

    return perform_seek


def _highwaters(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _build_highwaters(self: Any, consumer: Any, tps: Any, destination: Any,
                                title: str) -> None:
        await original(self, consumer, tps, destination, title)
        log.info("faust recovery reads changelog up to", kind=title,
                 highwaters={f"{tp.topic}:{tp.partition}": destination[tp] for tp in tps})

    return _build_highwaters


def _getmany(original: Callable[..., Any]) -> Callable[..., Any]:
    async def getmany(self: Any, timeout: float) -> Any:
        generation = self.app.consumer_generation_id
        fetched_at = time.time()
        async for tp, message in original(self, timeout):
            r_offset = self._read_offset.get(tp)
            if r_offset is not None and message.offset > r_offset + 1:
                log.warning("faust record past the read offset",
                            tp=f"{tp.topic}:{tp.partition}", offset=message.offset,
                            read_offset=r_offset, generation_at_fetch=generation,
                            generation=self.app.consumer_generation_id,
                            flow_active=self.flow_active,
                            fetched_ms_ago=round(1000 * (time.time() - fetched_at)))
            yield tp, message

    return getmany


def _unacked(self: Any, partitions: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for message in list(self._unacked_messages):
        if message.tp in partitions and not message.acked:
            counts[f"{message.tp.topic}:{message.tp.partition}"] += 1
    return dict(counts)


def _late_acks(self: Any) -> dict[str, list[int]]:
    """Acknowledgements kept for a partition that has no committed mark (landed after it was
    revoked and its bookkeeping forgotten)."""
    return {f"{tp.topic}:{tp.partition}": sorted(offsets)[:5]
            for tp, offsets in list(self._acked.items())
            if offsets and self._committed_offset.get(tp) is None}


def _rebalance(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    async def handler(self: Any, partitions: Any, *args: Any) -> None:
        log.info(f"faust partitions {what}", generation=self.app.consumer_generation_id,
                 partitions=sorted(f"{tp.topic.rsplit('.', 1)[-1]}:{tp.partition}"
                                   for tp in partitions if "changelog" not in tp.topic),
                 unacked_in_them=_unacked(self, partitions) or None,
                 acks_without_mark=_late_acks(self) or None)
        await original(self, partitions, *args)
        log.info(f"faust partitions {what}: done",
                 unacked_in_them=_unacked(self, partitions) or None,
                 acks_without_mark=_late_acks(self) or None)

    return handler


def _recovered(original: Callable[..., Any]) -> Callable[..., Any]:
    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        log.info("faust recovery completed: resuming", generation=generation_id)
        await original(self, generation_id)
        log.info("faust recovery completed: resumed")

    return on_recovery_completed


def _producer_flush(original: Callable[..., Any]) -> Callable[..., Any]:
    async def flush(self: Any) -> None:
        queue = self.buffer.pending._queue
        before = list(queue)
        began = time.time()
        await original(self)
        left = sum(1 for item in queue if any(item is b for b in before))
        if left:
            log.warning("faust producer flush returned with messages unsent", unsent=left,
                        buffered_before=len(before),
                        seconds=round(time.time() - began, 3))

    return flush


def install() -> None:
    """Install the wrappers (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    _wrap(mode_queues.FlowControlEvent, "clear", _clear)
    _wrap(faust_consumer.Consumer, "_add_gap", _add_gap)
    _wrap(faust_consumer.Consumer, "_commit_offsets", _commit_offsets)
    _wrap(faust_consumer.Consumer, "ack", _ack)  # the pure-Python path (Cython inlines it)
    _wrap(faust_consumer.Consumer, "perform_seek", _perform_seek)
    _wrap(faust_recovery.Recovery, "_build_highwaters", _highwaters)
    _wrap(faust_consumer.Consumer, "getmany", _getmany)
    _wrap(faust_consumer.Consumer, "on_partitions_revoked",
          lambda f: _rebalance(f, "revoked"))
    _wrap(faust_consumer.Consumer, "on_partitions_assigned",
          lambda f: _rebalance(f, "assigned"))
    _wrap(faust_recovery.Recovery, "on_recovery_completed", _recovered)
    _wrap(faust_aiokafka.Producer, "flush", _producer_flush)
