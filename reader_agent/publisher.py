"""Publishing from the edge: an idempotent ``acks=all`` aiokafka producer with an outbox.

``send`` waits for the broker's acknowledgement. While the broker is unreachable the producer
itself retries (idempotence keeps those retries duplicate-free); if a send still fails, the
event stays in the in-memory outbox and is re-sent, in order, before anything newer: nothing
is lost, and consumers de-duplicate by event id should a re-send follow a lost ack.
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
        self._lock = asyncio.Lock()
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
        assert isinstance(event, Event)
        async with self._lock:
            self.outbox.append((topic, key, encode(event)))
            await self._drain()

    async def flush(self, attempts: int = 3) -> None:
        async with self._lock:
            for _ in range(attempts):
                if not self.outbox:
                    return
                await self._drain()

    async def _drain(self) -> None:
        while self.outbox:
            topic, key, value = self.outbox[0]
            try:
                await self.producer.send_and_wait(topic, value, key=key)
            except KafkaError as exc:
                log.warning("broker did not take the event; kept in outbox",
                            topic=topic, pending=len(self.outbox), error=str(exc))
                return
            self.outbox.popleft()
            self.sent += 1
