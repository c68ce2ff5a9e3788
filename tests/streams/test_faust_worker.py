"""A faust-streaming worker, started as its own process, relays between two real topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.broker import free_port_block
from tests.kafka_auth import operator

pytestmark = [pytest.mark.broker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


async def test_faust_worker_process_relays(kafka_bootstrap: str, unique_name: str,
                                           tmp_path: Path) -> None:
    src, dst = f"{unique_name}-src", f"{unique_name}-dst"
    admin = AIOKafkaAdminClient(**operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(src, 1, 1), NewTopic(dst, 1, 1)])
    await admin.close()

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "RELAY_APP_ID": f"{unique_name}-app", "RELAY_SRC": src, "RELAY_DST": dst,
           "PYTHONPATH": str(REPO)}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "tests.streams.relay_app",
         "--datadir", str(tmp_path / "data"), "worker", "-l", "warn",
         "--web-port", str(free_port_block(1, start=46000))],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    producer = AIOKafkaProducer(**operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(dst, **operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap,
                                group_id=f"{unique_name}-check", auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        for word in (b"alpha", b"beta", b"gamma"):
            await producer.send_and_wait(src, word)
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(got) < 3 and loop.time() < deadline and worker.poll() is None:
            batch = await consumer.getmany(timeout_ms=500)
            got += [m.value for msgs in batch.values() for m in msgs if m.value]
    finally:
        await producer.stop()
        await consumer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    assert sorted(got) == [b"ALPHA", b"BETA", b"GAMMA"], (tmp_path / "worker.log").read_text()
