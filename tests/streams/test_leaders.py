"""Partitions without a leader, on a real broker: found, waited for (saying which), and the wait
ends when they have one. (On a cluster a partition loses its leader when the broker holding its
only replica dies; here the partition does not exist yet, then does.)"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic
from structlog.testing import capture_logs

from cardbus.logs import get_logger
from streams import clients
from streams.admin import cluster_size, leaderless, wait_for_leaders

pytestmark = pytest.mark.broker


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def test_leaderless_partitions_are_waited_for_and_named(kafka_bootstrap: str,
                                                             unique_name: str) -> None:
    topic = f"{unique_name}-leaders"
    await _create(kafka_bootstrap, topic, 2)
    assert await leaderless(kafka_bootstrap, [(topic, 0), (topic, 1)]) == []
    assert await leaderless(kafka_bootstrap, [(topic, 1), (topic, 4)]) == [(topic, 4)]

    later = f"{unique_name}-later"  # no leader until it is created, 1.5 s from now
    log = get_logger("test.leaders")

    async def create_later() -> None:
        await asyncio.sleep(1.5)
        await _create(kafka_bootstrap, later, 1)

    with capture_logs() as logs:
        creating = asyncio.create_task(create_later())
        waited = await wait_for_leaders(kafka_bootstrap, [(later, 0)], what="a test", log=log,
                                        every=0.2, say_every=0.5)
        await creating
    assert waited >= 1.0
    waiting = [e for e in logs if "without a leader" in e["event"]]
    assert waiting and waiting[0]["partitions"] == [f"{later}:0"]
    assert "a test: every partition has a leader again: going on" in [e["event"] for e in logs]


async def test_the_cluster_size_of_one_broker(kafka_bootstrap: str) -> None:
    assert await cluster_size(kafka_bootstrap) >= 1
