"""The real broker round-trips with the settings CardBus relies on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_auth import operator

pytestmark = pytest.mark.broker


async def _create(bootstrap: str, *topics: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(**operator(bootstrap), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def _drain(consumer: AIOKafkaConsumer, want: int, timeout_s: float) -> list[bytes]:
    got: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < want and loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=300)
        got += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
    return got


async def test_idempotent_acks_all_round_trip(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"{unique_name}-rt"
    await _create(kafka_bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(**operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    consumer = AIOKafkaConsumer(topic, **operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap,
                                group_id=f"{unique_name}-g", auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        sent = [f"m{i}".encode() for i in range(50)]
        for i, value in enumerate(sent):
            await producer.send(topic, value, key=str(i % 5).encode())
        await producer.flush()
        got = await _drain(consumer, len(sent), 20)
    finally:
        await producer.stop()
        await consumer.stop()
    assert sorted(got) == sorted(sent)


async def test_transaction_visible_only_after_commit(kafka_bootstrap: str,
                                                     unique_name: str) -> None:
    topic = f"{unique_name}-tx"
    await _create(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(**operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"{unique_name}-txid")
    committed = AIOKafkaConsumer(topic, **operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap,
                                 group_id=f"{unique_name}-rc", auto_offset_reset="earliest",
                                 isolation_level="read_committed")
    await producer.start()
    await committed.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"inside")
            assert await _drain(committed, 1, 2.0) == []  # not visible before commit
        assert await _drain(committed, 1, 15) == [b"inside"]

        with pytest.raises(RuntimeError):
            async with producer.transaction():
                await producer.send_and_wait(topic, b"aborted")
                raise RuntimeError("abort this transaction")
        async with producer.transaction():
            await producer.send_and_wait(topic, b"after-abort")
        assert await _drain(committed, 1, 15) == [b"after-abort"]
    finally:
        await producer.stop()
        await committed.stop()
