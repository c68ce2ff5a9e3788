"""The benchmark's process bookkeeping: leftovers of a killed run are found by namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psutil

from bench import procs


def test_leftover_workers_of_a_namespace_are_stopped_and_others_are_not() -> None:
    ns, other = f"t{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]

    def spawn(namespace: str) -> subprocess.Popen[bytes]:
        # in a session of its own, as a benchmark worker is: killing its parent leaves it
        return subprocess.Popen(sleeper, env={**os.environ, "CARDBUS_NAMESPACE": namespace},
                                start_new_session=True)

    mine = [spawn(ns), spawn(ns)]
    theirs = spawn(other)
    try:
        stopped = procs.kill_namespace(ns, grace_s=5)
        assert sorted(stopped) == sorted(p.pid for p in mine)
        for p in mine:
            assert p.wait(5) is not None
        assert theirs.poll() is None and psutil.pid_exists(theirs.pid)
        assert procs.kill_namespace(ns) == []
    finally:
        for p in [*mine, theirs]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_chaos_brokers_listen_below_the_ephemeral_port_range() -> None:
    """A restarted broker must get its port back: a port in the kernel's ephemeral range can be
    taken meanwhile by a client reconnecting to it (a TCP self-connect), which is how the
    broker-restart scenario once failed with "Address already in use"."""
    from bench.chaos import BROKER_PORT
    from streams.broker import CONTROLLER_PORT_OFFSET, INTERNAL_PORT_OFFSET

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    highest = BROKER_PORT + 2 + max(CONTROLLER_PORT_OFFSET, INTERNAL_PORT_OFFSET)  # 3 nodes
    assert highest < low


async def test_a_send_taken_but_never_delivered_is_counted_and_its_error_retrieved() -> None:
    """The load generator's terminals: a record the producer buffered but could not deliver
    (no leader until its delivery timeout) is counted, the payment stays in flight for a
    resend, and the delivery's error is retrieved (asyncio printed 'Future exception was
    never retrieved' for each one while a broker was down)."""
    import asyncio
    import gc

    from aiokafka.errors import KafkaTimeoutError

    from bench.load import ResendPolicy, Terminals

    class Buffering:  # what the load generator needs of AIOKafkaProducer.send
        def __init__(self) -> None:
            self.deliveries: list[asyncio.Future[None]] = []

        async def send(self, *_: object, **__: object) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.deliveries.append(fut)
            return fut

    unhandled: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
    producer = Buffering()
    terms = Terminals(producer, ResendPolicy(), cancel_event=lambda req: None)  # type: ignore[arg-type,return-value]
    assert await terms.publish("t", b"v", b"k") and await terms.publish("t", b"v", b"k")
    producer.deliveries[0].set_exception(KafkaTimeoutError())
    producer.deliveries[1].set_result(None)
    await asyncio.sleep(0)
    assert terms.undelivered == 1 and terms.refused == 0
    producer.deliveries.clear()
    gc.collect()
    assert unhandled == []  # the failed delivery's error was retrieved


def test_records_per_payment_from_two_snapshots_of_end_offsets() -> None:
    before = {"ns.payment-requests": 10, "ns-platform-pending-changelog": 4, "ns.idle": 7}
    after = {"ns.payment-requests": 30, "ns-platform-pending-changelog": 44, "ns.idle": 7,
             "ns.new": 5}
    got = procs.records_per_payment(before, after, 20, "ns")
    assert got == {"total": 3.25, "payments": 20,
                   "by_topic": {"-platform-pending-changelog": 2.0, ".payment-requests": 1.0,
                                ".new": 0.25}}
