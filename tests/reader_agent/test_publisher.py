"""The broker briefly unreachable while the reader agent publishes: every event arrives once.

The publisher talks to the real broker through a TCP proxy on loopback that the test cuts for
2 s (every open connection closed, new ones refused). Kafka clients connect to the address the
broker advertises after bootstrap, so the test maps that address to the proxy in aiokafka's
cluster metadata: all of the producer's traffic then goes through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.structs import BrokerMetadata

from reader_agent.publisher import Publisher
from schemas.clock import ClockTicked
from tests.kafka_auth import operator

pytestmark = [pytest.mark.broker]


class CuttableProxy:
    """A loopback TCP proxy to ``host:port`` that can be cut and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.cut_now = False
        self.cut_connections = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def cut(self) -> None:
        self.cut_now = True
        for w in list(self._writers):
            self.cut_connections += 1
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.cut_now = False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers -= {writer, up_w}


def _event(n: int) -> ClockTicked:
    return ClockTicked(event_id=f"{n:04d}-{uuid.uuid4().hex[:12]}", correlation_id="outage",
                       occurred_at=datetime.now(UTC), producer="terminal:T-OUTAGE", partition=0)


async def test_events_survive_a_two_second_broker_outage_without_loss_or_duplicates(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = kafka_bootstrap.split(",")[0].rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    proxy_port = await proxy.start()
    original = ClusterMetadata.broker_metadata

    def via_proxy(self: ClusterMetadata, broker_id: object) -> BrokerMetadata | None:
        b = original(self, broker_id)
        if b is not None and b.port == int(port):
            return BrokerMetadata(b.nodeId, "127.0.0.1", proxy_port, b.rack)
        return b

    monkeypatch.setattr(ClusterMetadata, "broker_metadata", via_proxy)
    topic = f"test.outage.{uuid.uuid4().hex[:8]}"
    pub = Publisher(f"127.0.0.1:{proxy_port}", client_id="outage-test", party="operator")
    await pub.start()
    events = [_event(n) for n in range(12)]
    try:
        await pub.send(topic, b"T-OUTAGE", events[0])  # topic exists, connections open

        async def outage() -> None:
            await asyncio.sleep(0.2)
            proxy.cut()
            await asyncio.sleep(2.0)
            proxy.restore()

        async def publish_rest() -> None:
            for ev in events[1:]:
                await pub.send(topic, b"T-OUTAGE", ev)
                await asyncio.sleep(0.1)

        await asyncio.wait_for(asyncio.gather(outage(), publish_rest()), 60)
        await pub.flush()
        assert not pub.outbox
    finally:
        await pub.stop()
        await proxy.stop()
    assert proxy.cut_connections >= 1  # the producer's traffic really went through the cut
    monkeypatch.setattr(ClusterMetadata, "broker_metadata", original)
    consumer = AIOKafkaConsumer(topic, **operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[str] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline and len(got) < len(events):
            batch = await consumer.getmany(timeout_ms=300)
            got += [ClockTicked.model_validate_json(m.value).event_id
                    for ms in batch.values() for m in ms]
        batch = await consumer.getmany(timeout_ms=800)  # anything extra would be a duplicate
        got += [ClockTicked.model_validate_json(m.value).event_id
                for ms in batch.values() for m in ms]
    finally:
        await consumer.stop()
    assert got == [ev.event_id for ev in events]  # all, once each, in order
