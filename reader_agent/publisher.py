"""Publishing from the edge: an idempotent ``acks=all`` aiokafka producer with an outbox.

``send`` waits for the broker's acknowledgement. While the broker is unreachable the producer
itself retries (idempotence keeps those retries duplicate-free); if a send still fails, the
event stays in the in-memory outbox and is re-sent, in order, before anything newer: nothing
is lost, and consumers de-duplicate by event id should a re-send follow a lost ack.

Sends that arrive together travel together (group commit): one drain task hands everything
waiting in the outbox to the producer at once and waits for the acknowledgements of the whole
group, so a tap's ``CardTapped`` and ``PaymentRequested`` sent concurrently cost one broker
round trip, not two in a row.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiokafka.errors import KafkaError

from cardbus.errors import BrokerError
from cardbus.logs import get_logger
from schemas.base import Event
from streams import clients
from streams.codec import encode

log = get_logger("reader_agent.publisher")


class Publisher:
    """``await send(topic, key, event)`` returns once the broker has the event (acks=all)."""

    def __init__(self, bootstrap: str, client_id: str = "cardbus-reader", *,
                 party: str = "terminal") -> None:
        self.bootstrap = bootstrap
        self.producer = clients.producer(bootstrap, party=party, client_id=client_id,
                                         linger_ms=0, request_timeout_ms=15000,
                                         retry_backoff_ms=100)
        self.outbox: deque[tuple[str, bytes, bytes]] = deque()
        self._waiters: list[tuple[tuple[str, bytes, bytes], asyncio.Future[None]]] = []
        self._draining: asyncio.Task[bool] | None = None
        self.sent = 0

    async def start(self) -> None:
        try:
            await self.producer.start()
        except KafkaError as exc:
            await self.producer.stop()
            raise BrokerError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        await self.flush()
        await self.producer.stop()

    async def send(self, topic: str, key: bytes, event: object) -> None:
        """Publish ``event``; returns when the broker took it, or when it stays in the outbox
        after the producer gave up (the next send or ``flush`` re-sends it first)."""
        assert isinstance(event, Event)
        entry = (topic, key, encode(event))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.outbox.append(entry)
        self._waiters.append((entry, done))
        self._drain_soon()
        await asyncio.shield(done)

    async def flush(self, attempts: int = 3) -> None:
        """Re-send what the outbox holds (up to ``attempts`` drains)."""
        for _ in range(attempts):
            if self._draining is not None and not self._draining.done():
                await asyncio.shield(self._draining)
            if not self.outbox:
                return
            self._drain_soon()
            assert self._draining is not None
            await asyncio.shield(self._draining)

    def _drain_soon(self) -> None:
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain())
            self._draining.add_done_callback(_retrieved)

    async def _drain(self) -> bool:
        """Send the outbox group by group until it is empty (True) or a send fails (False)."""
        try:
            while self.outbox:
                if not await self._send_group(list(self.outbox)):
                    return False
            return True
        except BaseException as exc:  # the waiting sends fail as the drain did
            for _entry, done in self._waiters:
                if done.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
            self._waiters = []
            raise
        finally:
            self._wake(everyone=True)  # sent, or kept for the next send or flush

    async def _send_group(self, group: list[tuple[str, bytes, bytes]]) -> bool:
        acks: list[asyncio.Future[object]] = []
        try:
            for topic, key, value in group:  # all handed over before any ack is awaited
                acks.append(await self.producer.send(topic, value, key=key))
        except KafkaError as exc:
            log.warning("broker did not take the event; kept in outbox", topic=group[0][0],
                        pending=len(self.outbox), error=str(exc))
        results = await asyncio.gather(*acks, return_exceptions=True)
        failed: list[tuple[str, bytes, bytes]] = []
        for entry, result in zip(group, results, strict=False):
            if isinstance(result, KafkaError):
                log.warning("broker did not take the event; kept in outbox", topic=entry[0],
                            pending=len(self.outbox), error=str(result))
                failed.append(entry)
            elif isinstance(result, BaseException):
                raise result
            else:
                self.sent += 1
        failed += group[len(results):]  # never handed over
        newer = list(self.outbox)[len(group):]
        self.outbox.clear()
        self.outbox.extend(failed + newer)  # what failed goes first, in its order
        self._wake(everyone=False)
        return not failed

    def _wake(self, *, everyone: bool) -> None:
        """Resolve the sends whose event left the outbox (all of them with ``everyone``: the
        drain stopped, and what is left waits for the next send or flush)."""
        pending = set(map(id, self.outbox))
        keep = []
        for entry, done in self._waiters:
            if everyone or id(entry) not in pending:
                if not done.done():
                    done.set_result(None)
            else:
                keep.append((entry, done))
        self._waiters = keep


def _retrieved(task: asyncio.Task[bool]) -> None:
    """The drain's error reached its waiting sends; mark it seen on the task too."""
    if not task.cancelled():
        task.exception()
