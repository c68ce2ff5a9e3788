"""``cardbus up``: the whole local system in the foreground, with a live view, until Ctrl-C.

Starts what is not running (broker, pcscd), the keys, topics and workers, enrolls terminal
T-0001, then shows per provider: decisions, approvals, declines by response code, latency
(request -> decision, from the events' and records' timestamps) p50/p99, and the consumer lag
of its worker; and the live audit (``cardbus audit --follow``, started with the workers):
running, or behind by how many events, and its last finding. Pay from another terminal with
``cardbus cards issue``/``insert``, ``cardbus pay`` and ``cardbus topup``. A second
``cardbus up`` finds the same keys, tables and topics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cardbus.paths import state_dir
from console.stack import TERMINAL_ID, LocalStack
from streams import clients

console = Console(stderr=True)


@dataclass
class ProviderView:
    decisions: int = 0
    approved: int = 0
    declines: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    lag: int = 0

    def pct(self, q: float) -> str:
        if not self.latencies_ms:
            return "--"
        data = sorted(self.latencies_ms[-5000:])
        return f"{data[min(len(data) - 1, int(q * len(data)))]:.0f}"


def audit_line(status: dict[str, Any] | None) -> str:
    """The live audit's state in one line: running / behind by N events / last finding."""
    if status is None:
        return "audit: not started"
    state = status.get("state", "?")
    if state == "running" and status.get("behind"):
        state = f"behind by {status['behind']:,} events"
    last = status.get("last_finding") or "none"
    return (f"audit: {state}, {status.get('events', 0):,} events, "
            f"{status.get('findings', 0)} finding(s), last finding: {last}")


def _table(views: dict[str, ProviderView], dead: Counter[str] | None = None,
           audit: str = "") -> Table:
    letters = ", ".join(f"{code}x{n}" for code, n in sorted((dead or Counter()).items()))
    t = Table(title="CardBus up: Ctrl-C stops everything",
              caption=f"dead letters: {letters or 'none'}" + (f"\n{audit}" if audit else ""))
    for col in ("provider", "decisions", "approved", "declines by code", "p50 ms", "p99 ms",
                "lag"):
        t.add_column(col)
    for pid, v in sorted(views.items()):
        declines = ", ".join(f"{c}x{n}" for c, n in sorted(v.declines.items())) or "-"
        t.add_row(pid, str(v.decisions), str(v.approved), declines, v.pct(0.5), v.pct(0.99),
                  str(v.lag))
    return t


async def _watch(stack: LocalStack) -> None:
    from aiokafka import TopicPartition

    from audit.live import read_status
    from cardbus.paths import state_dir
    from console.commands.reader import set_terminal_status
    from reader_agent.runner import enroll
    from schemas.deadletters import EventDeadLettered
    from schemas.payments import AuthorizationDecided
    from schemas.transit import TransitLoadAuthorized, TransitLoadConfirmed
    from streams import codec
    from streams.topics import (
        DEAD_LETTERS,
        NAMESPACE,
        PROVIDER_RESULTS,
        provider_app_id,
        provider_requests_spec,
    )

    await enroll(TERMINAL_ID, stack.bootstrap, timeout=120, providers=len(stack.providers),
                 activate=lambda: set_terminal_status(stack.bootstrap, TERMINAL_ID))
    console.print(f"terminal {TERMINAL_ID} enrolled; pay from another shell, e.g.:\n"
                  "  cardbus cards issue --provider bank-a --balance 100000\n"
                  "  cardbus cards insert <card-id> --reader 0\n"
                  "  cardbus pay --amount 1250 --reader 0   (PIN 1234)")
    views: dict[str, ProviderView] = defaultdict(ProviderView)
    for p in stack.providers:
        views[p] = ProviderView()
    consumer = clients.consumer(stack.bootstrap, party="operator")
    admin = clients.admin(stack.bootstrap)
    await consumer.start()
    await admin.start()
    tps = [TopicPartition(spec.name, p) for spec in (PROVIDER_RESULTS, DEAD_LETTERS)
           for p in range(spec.partitions)]
    dead: Counter[str] = Counter()  # dead letters by error code (replay-changed, decode, ...)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    try:
        with Live(_table(views), console=console, refresh_per_second=2) as live:
            tick = 0
            audit = ""
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msg in (m for ms in batch.values() for m in ms):
                    with contextlib.suppress(Exception):
                        ev = codec.decode(msg.topic, msg.value)
                        if isinstance(ev, EventDeadLettered):
                            dead[ev.error_code] += 1
                        elif isinstance(ev, AuthorizationDecided):
                            v = views[ev.provider_id]
                            v.decisions += 1
                            if ev.approved:
                                v.approved += 1
                            else:
                                v.declines[ev.response_code] += 1
                            v.latencies_ms.append(
                                msg.timestamp - ev.occurred_at.timestamp() * 1000)
                        elif isinstance(ev, TransitLoadAuthorized | TransitLoadConfirmed):
                            views[ev.operator_id].decisions += 1
                tick += 1
                if tick % 4 == 0:
                    for pid in stack.providers:
                        views[pid].lag = await _lag(admin, consumer, provider_app_id(pid),
                                                    provider_requests_spec(pid).name)
                    stack.check_workers()
                    audit = audit_line(read_status(state_dir(), NAMESPACE))
                live.update(_table(views, dead, audit))
    finally:
        await consumer.stop()
        await admin.close()


async def _lag(admin: object, consumer: object, group: str, topic: str) -> int:
    from aiokafka import TopicPartition

    try:
        committed = await admin.list_consumer_group_offsets(group)  # type: ignore[attr-defined]
        tps = [TopicPartition(topic, p) for p in range(6)]
        ends = await consumer.end_offsets(tps)  # type: ignore[attr-defined]
        return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0))
                   for tp in tps)
    except Exception:  # noqa: BLE001 - a view, not a check
        return -1


def run_up() -> int:
    stack = LocalStack(say=lambda m: console.print(f"[dim]·[/dim] {m}"))
    try:
        stack.start_all()
        stack.start_auditor()
        asyncio.run(_watch(stack))
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stack.stop()
    console.print(f"stopped; state kept in {state_dir()} (run `cardbus up` again to find it)")
    return 0
