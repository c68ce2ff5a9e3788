"""``cardbus bench iso``: the bank-iso bridge against the real jPOS host, link level.

Software cards tap in process (real ARQCs, PIN blocks) and the platform's signed
``AuthorizationRequested`` events are made up front; then the bridge's handler (PAN opened and
PIN block translated in its HSM facade, the 0100 over the one ISO 8583 link, the 0110 read, the
decision sealed and chained) runs them with a window of requests in flight. Kafka is not in the
loop: this is the bridge and the host. Prints requests/s and latency percentiles.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.platform import decide as platform
from agents.providers.iso8583.adapter import adapter as bank_iso
from agents.providers.iso8583.bridge import Bridge
from agents.providers.iso8583.hsm import bridge_hsm
from agents.providers.iso8583.link import Link, LinkSettings
from agents.providers.issuer import HsmIssuer
from bench.sim import World
from bench.stats import percentiles
from cardbus import vault
from cardbus.crypto.keystore import KeyStore
from cardbus.machine import describe
from cards.profile import CardState
from schemas.payments import AuthorizationRequested

TERMINAL = "T-BENCH-ISO"


@dataclass(frozen=True)
class IsoBenchOptions:
    """What to run."""

    requests: int = 3_000
    window: int = 64
    cards: int = 100
    warmup: int = 200


def prepare(home: Path) -> World:
    """Keys on disk for the platform, bank-iso and a terminal (the host reads the bank's)."""
    stores: list[vault.FileKeyStore] = []

    def keystore(party: str) -> KeyStore:
        vault.create(party, home)
        store = vault.FileKeyStore(party, home)
        stores.append(store)
        return store

    world = World.build([bank_iso], [TERMINAL], datetime.now(UTC), keystores=keystore)
    for store in stores:
        store.save()
    return world


def requests(world: World, count: int, cards: int) -> list[AuthorizationRequested]:
    """``count`` signed requests over ``cards`` cards (each card's in ATC order)."""
    issued = [world.issue("bank-iso", balance=10**9) for _ in range(cards)]
    states = [CardState(None, atc=0) for _ in issued]
    out = []
    for i in range(count):
        card, state = issued[i % cards], states[i % cards]
        req = world.pay(TERMINAL, card, amount=100 + i % 900, when=datetime.now(UTC),
                        state=state)
        _, events = platform.request_payment(
            req, received_at=req.occurred_at, terminal=world.terminal_records[TERMINAL],
            routes=world.routes, hsm=world.platform)
        ((_, _, auth),) = events.events
        assert isinstance(auth, AuthorizationRequested)
        out.append(auth)
    return out


def _host_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def _run(world: World, home: Path, port: int, work: list[AuthorizationRequested],
               opts: IsoBenchOptions, host_pid: int | None) -> dict[str, Any]:
    hsm = bridge_hsm("bank-iso", home)
    link = Link(LinkSettings(port=port, deadline=5.0))
    codes: dict[str, int] = {}

    async def publish(_key: str, event: Any) -> None:
        codes[event.response_code] = codes.get(event.response_code, 0) + 1

    bridge = Bridge("bank-iso", hsm, HsmIssuer(hsm, world.platform.verifier), link, publish)
    answers: dict[str, Any] = {}
    chains: dict[str, Any] = {}
    await link.start()
    latencies: list[float] = []

    async def one(req: AuthorizationRequested, partition: int, measure: bool) -> None:
        t0 = time.perf_counter()
        await bridge.authorize(req, partition, answers, chains)
        if measure:
            latencies.append((time.perf_counter() - t0) * 1000)

    async def drive(batch: list[AuthorizationRequested], measure: bool) -> float:
        sem = asyncio.Semaphore(opts.window)

        async def gated(i: int, req: AuthorizationRequested) -> None:
            async with sem:
                await one(req, i % 6, measure)

        t0 = time.perf_counter()
        await asyncio.gather(*(gated(i, r) for i, r in enumerate(batch)))
        return time.perf_counter() - t0

    try:
        await drive(work[:opts.warmup], measure=False)
        codes.clear()
        cpu0, host0 = time.process_time(), _host_cpu(host_pid)
        elapsed = await drive(work[opts.warmup:], measure=True)
        cpu, host = time.process_time() - cpu0, _host_cpu(host_pid) - host0
    finally:
        await link.stop()
    measured = len(work) - opts.warmup
    return {"requests": measured, "window": opts.window, "cards": opts.cards,
            "seconds": round(elapsed, 3), "per_second": round(measured / elapsed, 1),
            "cpu_ms_per_request": {"bridge": round(cpu * 1000 / measured, 3),
                                   "host": round(host * 1000 / measured, 3)},
            "latency_ms": {k: round(v, 2) for k, v in percentiles(latencies).items()},
            "codes": codes, "timed_out": link.stats.timed_out,
            "reversals": link.stats.reversals_sent}


def run(world: World, home: Path, port: int, opts: IsoBenchOptions,
        host_pid: int | None = None) -> dict[str, Any]:
    """Make the requests, then run them through the bridge against the host on ``port``
    (``host_pid``: the host's process, for its CPU time)."""
    t0 = time.perf_counter()
    work = requests(world, opts.requests + opts.warmup, opts.cards)
    made = time.perf_counter() - t0
    result = asyncio.run(_run(world, home, port, work, opts, host_pid))
    result.update(machine=describe(), setup_seconds=round(made, 1))
    return result


def text(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return "\n".join([
        f"bank-iso bridge -> jPOS host (one ISO 8583 link, {result['window']} in flight, "
        f"{result['cards']} cards)",
        f"  {result['requests']} authorizations in {result['seconds']} s: "
        f"{result['per_second']}/s",
        f"  latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}",
        f"  CPU per request: bridge {result['cpu_ms_per_request']['bridge']} ms (one Python "
        f"process), host {result['cpu_ms_per_request']['host']} ms (JVM, all threads)",
        f"  host answers: {result['codes']}  timed out: {result['timed_out']}",
        f"  machine: {result['machine']['cores']} cores, {result['machine']['cpu']}, load "
        f"{result['machine']['load_average_at_start']} (shared: compare within one run)",
    ])
