"""One pipeline configuration, run in its own topic namespace (``CARDBUS_NAMESPACE`` and
``CARDBUS_PAYMENT_PARTITIONS`` are read at import, so ``bench.run`` starts this module
as a child process per configuration with its environment set).

Steps: local key setup and topics; platform and provider workers as separate processes;
terminals enrolled with the running platform; cards issued (``CardIssued``); a warm-up; the
closed-loop maximum; open-loop phases at fractions of it; an optional profiled phase; the
final cut-over of every provider partition; the accounting (every request one result, the
settlement totals equal the approvals the terminals saw) and the consumer lag.

    python -m bench.pipeline '<json config>'   # prints one JSON object
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench import stats
from bench.load import Generator, Phase, Results, closed_loop, new_producer, open_loop
from bench.procs import (
    Fleet,
    consumer_lag,
    records_per_payment,
    start_profile,
    summarize_profile,
    topic_ends,
)
from streams import clients
from streams.topics import (
    NAMESPACE,
    PAYMENT_REQUESTS,
    PROVIDER_RESULTS,
    SETTLEMENTS,
    TERMINAL_KEYS,
    TERMINALS,
    provider_requests_spec,
    provider_requests_topic,
)

PROVIDERS = ("bank-a", "bank-b")


def phase_figures(phase: Phase) -> dict[str, Any]:
    """Throughput and latency of one phase."""
    span = (phase.last_result - phase.started) if phase.last_result else 0.0
    return {"sent": phase.sent_count, "answered": phase.done_count,
            "seconds": round(span, 3),
            "payments_per_s": round(phase.done_count / span, 1) if span else 0.0,
            "latency_ms": stats.percentiles(phase.latencies_ms)}


async def enroll(bootstrap: str, home: Path, count: int) -> list[str]:
    """Create ``count`` software terminals and install the keys the platform issues."""
    from cardbus import ceremony
    from reader_agent.terminal import Terminal
    from schemas.base import header
    from schemas.terminals import TerminalKeysIssued, TerminalStatusChanged
    from streams import codec
    from streams.topics import TERMINAL_STATUS

    terms = {f"B{secrets.token_hex(3).upper()}{i:03d}": None for i in range(count)}
    made = {tid: Terminal.create(tid, home=home) for tid in terms}
    keys = clients.consumer(bootstrap, party="terminal")
    await keys.start()
    producer = await new_producer(bootstrap, party="operator")  # enrollments and activations
    try:
        tps = [TopicPartition(TERMINAL_KEYS.name, p) for p in range(TERMINAL_KEYS.partitions)]
        keys.assign(tps)
        now = datetime.now(UTC)
        for tid, term in made.items():
            await producer.send(TERMINALS.name, term.enrollment(now).model_dump_json().encode(),
                                key=tid.encode())
        await producer.flush()

        async def follow(done: Any, what: str) -> None:
            deadline = time.monotonic() + 120
            waiting = {tid for tid in made if not done(made[tid])}
            while waiting and time.monotonic() < deadline:
                batch = await keys.getmany(timeout_ms=300)
                for msg in (m for ms in batch.values() for m in ms):
                    tid = msg.key.decode() if msg.key else ""
                    if tid in made:
                        ev = codec.decode(TERMINAL_KEYS.name, msg.value)
                        if isinstance(ev, TerminalKeysIssued):
                            made[tid].apply_keys(ev)
                            if done(made[tid]):
                                waiting.discard(tid)
            if waiting:
                some = {tid: (made[tid].status, sorted(made[tid].card_auth))
                        for tid in sorted(waiting)[:5]}
                raise RuntimeError(f"{len(waiting)} terminal(s) {what} (status, providers: "
                                   f"{some})")

        await keys.seek_to_beginning(*tps)
        await follow(lambda t: t.ready and len(t.card_auth) >= len(PROVIDERS),
                     "got no keys for both providers")
        operator = ceremony.platform_hsm(home)  # the operator activates the new terminals
        for tid in made:
            ev = operator.sign_event(TerminalStatusChanged(
                **header("platform", tid), terminal_id=tid, status="active",
                reason="bench terminal"))
            await producer.send(TERMINAL_STATUS.name, codec.encode(ev), key=tid.encode())
        await producer.flush()
        await follow(lambda t: t.status == "active", "were not activated")
    finally:
        await producer.stop()
        await keys.stop()
    return list(made)


async def admit_providers(bootstrap: str, home: Path) -> None:
    """The operator's sealed admission of each provider (the platform routes no other)."""
    from agents.providers.announce import admission_for
    from agents.providers.base import adapter_for
    from cardbus import ceremony
    from streams import codec
    from streams.topics import PROVIDER_ADMISSIONS

    operator = ceremony.platform_hsm(home)
    producer = await new_producer(bootstrap, party="operator")
    try:
        for pid in PROVIDERS:
            ev = operator.sign_event(admission_for(
                adapter_for(pid), ceremony.provider_hsm(pid, home).verifier))
            await producer.send(PROVIDER_ADMISSIONS.name, codec.encode(ev), key=pid.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def issue_cards(bootstrap: str, home: Path, count: int) -> list[Any]:
    """Issue ``count`` cards across the providers; their accounts open at the providers."""
    from agents.providers.base import adapter_for, card_issued_event
    from cardbus import ceremony
    from streams import codec

    producer = await new_producer(bootstrap, party="operator")  # the banks' card issuance
    profiles = []
    try:
        for i, pid in enumerate(PROVIDERS):
            hsm = ceremony.provider_hsm(pid, home)
            adapter = adapter_for(pid)
            topic = provider_requests_topic(pid)
            share = count // len(PROVIDERS) + (1 if i < count % len(PROVIDERS) else 0)
            for _ in range(share):
                issued = adapter.issue_card(hsm, pin="1234", opening_balance=10**11)
                ev = card_issued_event(issued, hsm, datetime.now(UTC))
                await producer.send(topic, codec.encode(ev, topic=topic),
                                    key=issued.card.pan_token.encode())
                profiles.append(issued.profile)
        await producer.flush()
    finally:
        await producer.stop()
    return profiles


def cutover_records(home: Path, label: str, now: datetime) -> list[tuple[str, int, bytes, bytes]]:
    """(topic, partition, key, value) of every provider's cut-over: one command per partition,
    each with its own event id (as the bank's own daily cut-over). The batch a partition closes
    takes its event id from its command's, so one command sent to every partition would give
    every partition's closed batch the same event id (the audit's conflict findings)."""
    from agents.providers.settle import cutover_events
    from cardbus import ceremony
    from streams import codec

    out = []
    for pid in PROVIDERS:
        hsm = ceremony.provider_hsm(pid, home)
        spec = provider_requests_spec(pid)
        for part, ev in cutover_events(hsm, f"bench-{label}", now, spec.partitions):
            out.append((spec.name, part, pid.encode(), codec.encode(ev, topic=spec.name)))
    return out


async def cut_over(bootstrap: str, home: Path, label: str) -> None:
    """Close the open settlement batch of every partition of every provider."""
    producer = await new_producer(bootstrap, party="operator")  # the banks' cut-overs
    try:
        for topic, part, key, value in cutover_records(home, label, datetime.now(UTC)):
            await producer.send(topic, value, key=key, partition=part)
        await producer.flush()
    finally:
        await producer.stop()


async def settled(bootstrap: str, timeout: float = 60) -> dict[str, int]:
    """Net minor units per provider over every closed batch, once the providers have
    committed past the last cut-over (an empty batch closes without an event)."""
    parts = provider_requests_spec(PROVIDERS[0]).partitions
    groups = {f"{NAMESPACE}-provider-{p}": [(provider_requests_topic(p), parts)]
              for p in PROVIDERS}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any((await consumer_lag(bootstrap, groups)).values()):
            break
        await asyncio.sleep(0.5)
    consumer = clients.consumer(bootstrap, party="operator")
    await consumer.start()
    try:
        tps = [TopicPartition(SETTLEMENTS.name, p) for p in range(SETTLEMENTS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        net = dict.fromkeys(PROVIDERS, 0)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            got = await consumer.getmany(timeout_ms=300)
            for msg in (m for ms in got.values() for m in ms):
                raw = json.loads(msg.value)
                net[raw["provider_id"]] = net.get(raw["provider_id"], 0) + sum(
                    t["net_amount"] for t in raw.get("totals", []))
        return net
    finally:
        await consumer.stop()


async def create_changelogs(bootstrap: str, home: Path) -> list[str]:
    """Create the workers' table changelog topics before the workers start (several workers
    starting at once on a busy broker can miss creating one, and the table then fails)."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from agents.platform.app import PlatformConfig
    from agents.platform.app import build as build_platform
    from agents.providers.app import ProviderConfig
    from agents.providers.app import build as build_provider
    from agents.providers.base import adapter_for

    apps = [build_platform(PlatformConfig(bootstrap=bootstrap, datadir=home / "probe-p",
                                          home=home))]
    apps += [build_provider(ProviderConfig(adapter=adapter_for(p), bootstrap=bootstrap,
                                           datadir=home / f"probe-{p}", home=home))
             for p in PROVIDERS]
    topics = {t.changelog_topic.get_topic_name(): t.partitions or 1
              for app in apps for t in app.tables.values()}
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        for name, parts in topics.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, parts, 1, topic_configs={
                    "cleanup.policy": "compact"})])
    finally:
        await admin.close()
    return sorted(topics)


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration; returns its figures."""
    from cardbus import ceremony
    from streams import credentials
    from streams.admin import ensure_topics
    from streams.topics import TopicSettings, catalogue

    bootstrap, home = cfg["bootstrap"], Path(cfg["home"])
    workers, window = int(cfg["workers_per_stage"]), int(cfg["window"])
    ceremony.setup(home, list(PROVIDERS))
    # this namespace's parties on a secured bus: principals, passwords (in home), ACLs
    await asyncio.to_thread(credentials.ensure_parties, bootstrap, list(PROVIDERS), home=home)
    await ensure_topics(bootstrap, list(catalogue(PROVIDERS)), TopicSettings())
    await admit_providers(bootstrap, home)
    await create_changelogs(bootstrap, home)
    import os

    env = {**os.environ, "CARDBUS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    fleet = Fleet(env, home, cfg.get("log_level", "INFO"))
    common = ["--bootstrap", bootstrap, "--loglevel", cfg.get("loglevel", "warn")]
    if cfg.get("profile_seconds"):
        common.append("--dumpable")  # py-spy attaches to the hottest worker
    for i in range(1, workers + 1):
        fleet.start_worker(f"platform-{i}", "platform", "--timeout", "60", "--instance", str(i),
                           "--datadir", str(home / f"w-platform-{i}"), *common)
        for pid in PROVIDERS:
            fleet.start_worker(f"{pid}-{i}", "provider", pid, "--instance", str(i),
                               "--datadir", str(home / f"w-{pid}-{i}"), *common)
    fleet.watch("load-generator", os.getpid())
    if cfg.get("broker_pid"):
        fleet.watch("broker", int(cfg["broker_pid"]))
    sampler = asyncio.create_task(fleet.sample_forever())
    out: dict[str, Any] = {"namespace": NAMESPACE, "workers_per_stage": workers,
                           "partitions": PAYMENT_REQUESTS.partitions, "window": window}
    gen: Generator | None = None
    results = Results(bootstrap)
    producer = None
    try:
        t0 = time.monotonic()
        terminal_ids = await enroll(bootstrap, home, int(cfg["terminals"]))
        fleet.check_alive()
        cards = await issue_cards(bootstrap, home, int(cfg["cards"]))
        out["setup_seconds"] = round(time.monotonic() - t0, 1)
        out["terminals"], out["cards"] = len(terminal_ids), len(cards)
        gen = Generator(home, terminal_ids, cards)
        await results.start()
        producer = await new_producer(bootstrap)
        sent: list[stats.Sent] = []

        def prepare(n: int) -> list[Any]:
            t = time.monotonic()
            reqs = gen.prepare(n)
            out.setdefault("pregenerate_seconds", 0.0)
            out["pregenerate_seconds"] = round(out["pregenerate_seconds"] + time.monotonic() - t, 1)
            sent.extend(r.sent for r in reqs)
            return reqs

        warm = await closed_loop(producer, results, prepare(int(cfg["warmup"])), window,
                                 "warmup", timeout=180)
        out["warmup"] = phase_figures(warm)
        fleet.check_alive()
        cutovers = 0

        async def periodic_cutover() -> None:
            nonlocal cutovers
            while True:
                await asyncio.sleep(float(cfg["cutover_every"]))
                await cut_over(bootstrap, home, f"{cutovers}")
                cutovers += 1

        cutter = asyncio.create_task(periodic_cutover())
        reqs = prepare(int(cfg["payments"]))
        ends = await topic_ends(bootstrap, NAMESPACE)
        fleet.mark()
        best = await closed_loop(producer, results, reqs, window, "max")
        out["max"] = phase_figures(best)
        out["processes"] = fleet.usage()
        out["records_per_payment"] = records_per_payment(  # after the CPU figures: not in them
            ends, await topic_ends(bootstrap, NAMESPACE), best.done_count, NAMESPACE)
        rate = max(out["max"]["payments_per_s"], 1.0)
        out["open_loop"] = []
        for frac in cfg.get("open_loop", []):
            n = max(10, int(rate * frac * float(cfg["open_seconds"])))
            reqs = prepare(n)
            await asyncio.sleep(1.0)  # let the previous phase drain
            phase = await open_loop(producer, results, reqs, rate * frac, f"{frac:.0%}")
            out["open_loop"].append({"fraction": frac, "offered_per_s": round(rate * frac, 1),
                                     **phase_figures(phase)})
        if cfg.get("profile_seconds"):
            secs = float(cfg["profile_seconds"])
            hottest = max(fleet.workers(), key=lambda p: out["processes"][p.name]["cpu_percent"])
            reqs = prepare(int(rate * (secs + 2)))
            prof_path = home / f"profile-{hottest.name}.txt"
            spy = start_profile(hottest.pid, secs, prof_path)
            phase = await closed_loop(producer, results, reqs, window, "profiled")
            if spy is not None:
                _, err = spy.communicate(timeout=60)
                out["profile"] = {"process": hottest.name, **summarize_profile(prof_path),
                                  "payments_per_s_while_profiling":
                                      phase_figures(phase)["payments_per_s"]}
                if not out["profile"].get("samples"):
                    out["profile"]["error"] = err.decode(errors="replace")[-300:]
            else:
                out["profile"] = {"process": hottest.name,
                                  "error": "py-spy not installed (pip install cardbus[bench])"}
        cutter.cancel()
        await asyncio.sleep(2.0)  # the last results and commits
        await cut_over(bootstrap, home, "final")
        ledger = await settled(bootstrap)
        parts = provider_requests_spec(PROVIDERS[0]).partitions
        out["consumer_lag"] = await consumer_lag(bootstrap, {
            f"{NAMESPACE}-platform": [(PAYMENT_REQUESTS.name, PAYMENT_REQUESTS.partitions),
                                      (PROVIDER_RESULTS.name, PROVIDER_RESULTS.partitions)],
            **{f"{NAMESPACE}-provider-{p}": [(provider_requests_topic(p), parts)]
               for p in PROVIDERS}})
        out["accounting"] = stats.account(sent, results.seen, ledger).as_dict()
        out["peak_rss_mib"] = {k: v["peak_rss_mib"] for k, v in fleet.usage().items()}
        fleet.check_alive()
        return out
    finally:
        sampler.cancel()
        if producer is not None:
            await producer.stop()
        await results.stop()
        if gen is not None:
            gen.close()
        fleet.stop()


def _terminate(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    from cryptography.utils import CryptographyDeprecationWarning

    from cardbus.logs import configure

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    configure("WARNING")
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGTERM, _terminate)  # so the workers are stopped on the way out
    print(json.dumps(asyncio.run(run(cfg))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
