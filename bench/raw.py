"""The bus's own limit: one aiokafka producer process, one consumer process, one hop.

Same message size and partition count as the payment requests, ``acks=all``, idempotent
producer with the linger the Faust workers use. The rate is messages consumed divided by the
time from the first send to the last message read.

``party``: connect as that bus party (``streams.clients``: TLS + SCRAM on a secured cluster;
each process opens the party's vault itself, an ``SSLContext`` does not cross processes).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from streams import clients

LINGER_MS = 2  # what streams.faust_support gives the workers' producers
WINDOW = 20_000  # sends in flight before the producer waits for acks


async def _create(bootstrap: str, topic: str, partitions: int, party: str) -> None:
    admin = clients.admin(bootstrap, party=party)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _delete(bootstrap: str, topic: str, party: str) -> None:
    admin = clients.admin(bootstrap, party=party)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, count: int, size: int,
                   party: str) -> dict[str, float]:
    producer = clients.producer(bootstrap, party=party, linger_ms=LINGER_MS)
    await producer.start()
    try:
        value = os.urandom(size // 2).hex().encode()[:size]
        pending: list[asyncio.Future[Any]] = []
        start = time.time()
        for i in range(count):
            pending.append(await producer.send(topic, value, key=b"card-%d" % (i % 4096)))
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return {"first_send": start, "acked": time.time()}
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, partitions: int, count: int,
                   ready: Any, party: str) -> dict[str, float]:
    consumer = clients.consumer(bootstrap, party=party, max_partition_fetch_bytes=4 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        seen = 0
        first = 0.0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            n = sum(len(v) for v in batch.values())
            if n and not first:
                first = time.time()
            seen += n
        return {"first_read": first, "last_read": time.time(), "read": float(seen)}
    finally:
        await consumer.stop()


def _producer_main(bootstrap: str, topic: str, count: int, size: int, ready: Any,
                   out: Any, party: str) -> None:
    ready.wait(60)
    out.put(("producer", asyncio.run(_produce(bootstrap, topic, count, size, party))))


def _consumer_main(bootstrap: str, topic: str, partitions: int, count: int, ready: Any,
                   out: Any, party: str) -> None:
    out.put(("consumer", asyncio.run(_consume(bootstrap, topic, partitions, count, ready,
                                              party))))


def single_hop(bootstrap: str, *, topic: str, partitions: int, size: int,
               count: int, party: str = "operator") -> dict[str, Any]:
    """Run the one-hop measurement in two fresh processes (as ``party`` when given); returns
    its figures."""
    asyncio.run(_create(bootstrap, topic, partitions, party))
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consumer_main, args=(bootstrap, topic, partitions, count,
                                                      ready, out, party)),
             ctx.Process(target=_producer_main, args=(bootstrap, topic, count, size, ready,
                                                      out, party))]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(30)
    asyncio.run(_delete(bootstrap, topic, party))
    prod, cons = got["producer"], got["consumer"]
    elapsed = cons["last_read"] - prod["first_send"]
    return {"messages": count, "message_bytes": size, "partitions": partitions,
            "acks": "all", "idempotent": True, "linger_ms": LINGER_MS,
            "seconds": round(elapsed, 3),
            "msgs_per_s": round(count / elapsed, 1),
            "producer_msgs_per_s": round(count / (prod["acked"] - prod["first_send"]), 1)}
