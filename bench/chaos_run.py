"""One scenario of ``cardbus bench chaos``, in its own topic namespace (``CARDBUS_NAMESPACE`` and
``CARDBUS_PAYMENT_PARTITIONS`` are read at import, so ``bench.chaos`` starts this module as a
child process per scenario with its environment set).

Steps: keys, the parties' bus credentials and ACLs, topics (replication follows the cluster),
the operator's admission of the banks; a platform worker and one worker per bank; terminals
enrolled and activated by the operator, cards issued; a warm-up; the closed-loop maximum
(unless a rate is given); open-loop load at a fraction of it for the run's length while the
scenario's faults happen; the terminals resend and cancel as real ones do; then the drain (every
payment answered or cancelled, every approval no terminal was told about reversed), the final
cut-over and the accounting.

    python -m bench.chaos_run '<json config>'   # prints one JSON object
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench import faults, outcomes
from bench.load import (
    Generator,
    Prepared,
    ResendPolicy,
    Results,
    Terminals,
    cancel_maker,
    closed_loop,
    new_producer,
    open_loop,
)
from bench.pipeline import admit_providers, cut_over, enroll, issue_cards, settled
from bench.procs import Fleet, consumer_lag
from bench.stats import Sent
from cardbus import ceremony
from schemas.deadletters import EventDeadLettered
from schemas.payments import AuthorizationDecided, ReversalCompleted, ReversalRequested
from streams import clients, codec, credentials
from streams.admin import ensure_topics
from streams.topics import (
    DEAD_LETTERS,
    NAMESPACE,
    PAYMENT_REQUESTS,
    PROVIDER_RESULTS,
    catalogue,
    provider_requests_spec,
    provider_requests_topic,
)

PROVIDERS = faults.PROVIDERS
LOG_MARKERS = ("decision parked", "decision matched no payment", "payment cancelled by the "
               "terminal", "payment timed out", "message dead-lettered", "faust queues cleared",
               "faust gap taken as acked", "faust ack with no committed mark",
               "producer buffer not draining", "faust record past the read offset",
               "faust producer flush returned with messages unsent", "Traceback")


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` up to its current end, decoded (no group)."""
    consumer = clients.consumer(bootstrap, party="operator")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for msg in (m for ms in batch.values() for m in ms):
                with contextlib.suppress(Exception):  # not ours to judge here: counted apart
                    out.append(codec.decode(topic, msg.value))
        return out
    finally:
        await consumer.stop()


async def bank_events(bootstrap: str) -> tuple[list[AuthorizationDecided],
                                               list[ReversalCompleted], list[ReversalRequested]]:
    results = await read_topic(bootstrap, PROVIDER_RESULTS.name, PROVIDER_RESULTS.partitions)
    asked: list[ReversalRequested] = []
    for pid in PROVIDERS:
        spec = provider_requests_spec(pid)
        asked += [e for e in await read_topic(bootstrap, spec.name, spec.partitions)
                  if isinstance(e, ReversalRequested)]
    return ([e for e in results if isinstance(e, AuthorizationDecided)],
            [e for e in results if isinstance(e, ReversalCompleted)], asked)


def unreversed(decisions: list[AuthorizationDecided], completed: list[ReversalCompleted],
               approved_payments: set[str]) -> list[str]:
    """Approvals no terminal was told about that the bank has not reversed (yet)."""
    undone = {c.original_event_id for c in completed}
    return sorted({d.correlation_id for d in decisions
                   if d.approved and d.correlation_id not in approved_payments
                   and d.request_event_id not in undone})


class Run:
    """The state of one scenario run."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.bootstrap: str = cfg["bootstrap"]
        self.home = Path(cfg["home"])
        self.scenario = faults.BY_NAME[cfg["scenario"]]
        env = {**os.environ, "CARDBUS_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.stage = faults.Stage(Fleet(env, self.home, "INFO"), self.home, self.bootstrap,
                                  Path(cfg["cluster_home"]) if cfg.get("cluster_home") else None,
                                  float(cfg["platform_timeout"]),
                                  ("--exactly-once",) if cfg.get("exactly_once") else ())
        self.results = Results(self.bootstrap)
        self.sent: list[Sent] = []
        self.out: dict[str, Any] = {"scenario": self.scenario.name,
                                    "title": self.scenario.title, "namespace": NAMESPACE,
                                    "partitions": PAYMENT_REQUESTS.partitions,
                                    "brokers": self.scenario.brokers,
                                    "load_average_at_start": os.getloadavg()[0]}

    async def setup(self) -> list[str]:
        ceremony.setup(self.home, list(PROVIDERS))
        # this namespace's parties on the secured bus (principals, passwords in home, ACLs),
        # its topics, and the operator's admission of the banks (the platform routes no other)
        await asyncio.to_thread(credentials.ensure_parties, self.bootstrap, list(PROVIDERS),
                                home=self.home)
        await ensure_topics(self.bootstrap, list(catalogue(PROVIDERS, with_changelogs=True)))
        await admit_providers(self.bootstrap, self.home)
        for name in ("platform-1", *(f"{p}-1" for p in PROVIDERS)):
            self.stage.start(name)
        self.stage.fleet.watch("load-generator", os.getpid())
        terminal_ids = await enroll(self.bootstrap, self.home, int(self.cfg["terminals"]))
        self.stage.check_alive()
        return terminal_ids

    async def run(self) -> dict[str, Any]:
        t_setup = time.monotonic()
        terminal_ids = await self.setup()
        cards = await issue_cards(self.bootstrap, self.home, int(self.cfg["cards"]))
        self.out["terminals"], self.out["cards"] = len(terminal_ids), len(cards)
        self.out["setup_seconds"] = round(time.monotonic() - t_setup, 1)
        gen = Generator(self.home, terminal_ids, cards)
        producer = await new_producer(self.bootstrap)
        policy = ResendPolicy(float(self.cfg["resend_first"]), 8.0, float(self.cfg["deadline"]))
        terms = Terminals(producer, policy, cancel_maker(self.home))
        if not self.cfg.get("resend", True):
            terms.policy = ResendPolicy(1e9, 1e9, 1e9)
        self.results.on_answer = terms.answered
        await self.results.start()
        resender = asyncio.create_task(terms.run())
        try:
            await self.load(gen, producer, terms)
            await self.drain(terms)
        finally:
            resender.cancel()
            await producer.stop()
            await self.results.stop()
            gen.close()
        return self.out

    def prepare(self, gen: Generator, n: int) -> list[Prepared]:
        reqs = gen.prepare(n)
        self.sent += [r.sent for r in reqs]
        return reqs

    async def load(self, gen: Generator, producer: Any, terms: Terminals) -> None:
        cfg = self.cfg
        warm = await closed_loop(producer, self.results, self.prepare(gen, 200), 100, "warmup",
                                 timeout=120, terminals=terms)
        self.out["warmup_answered"] = warm.done_count
        rate = cfg.get("rate")
        if not rate:
            best = await closed_loop(producer, self.results,
                                     self.prepare(gen, int(cfg["max_payments"])), 300, "max",
                                     timeout=120, terminals=terms)
            span = best.last_result - best.started if best.last_result else 0.0
            self.out["max_payments_per_s"] = round(best.done_count / span, 1) if span else 0.0
            rate = max(10.0, float(cfg["fraction"]) * self.out["max_payments_per_s"])
        self.out["offered_per_s"] = round(float(rate), 1)
        seconds = max(float(cfg["seconds"]), self.scenario.min_seconds)
        reqs = self.prepare(gen, int(float(rate) * seconds))
        await asyncio.sleep(1.0)
        t0 = time.time()
        self.t0 = t0
        self.out["load_started_at"] = time.strftime("%H:%M:%S", time.gmtime(t0)) + \
            f".{int(t0 * 1000) % 1000:03d}Z"
        steps = asyncio.gather(*(self.stage.do(step, t0) for step in self.scenario.steps))
        await open_loop(producer, self.results, reqs, float(rate), "chaos",
                        timeout=float(cfg["deadline"]) + 60, terminals=terms)
        await steps
        self.out["open_loop_seconds"] = round(time.time() - t0, 1)
        self.out["steps"] = self.stage.log

    async def drain(self, terms: Terminals) -> None:
        """Wait for every payment's outcome, and every stray approval's reversal."""
        deadline = time.monotonic() + float(self.cfg["deadline"]) + 30
        while terms.flights and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        self.stage.check_alive()
        reversal_wait = time.monotonic() + float(self.cfg["reversal_wait"])
        while True:
            result = self.account(terms)
            decisions, completed, asked = await bank_events(self.bootstrap)
            approved = {s.payment_id for s in self.results.seen
                        if s.approved and s.payment_id not in terms.cancelled}
            open_ = unreversed(decisions, completed, approved)
            if not open_ or time.monotonic() > reversal_wait:
                break
            await asyncio.sleep(2.0)
        self.out.update(result.as_dict())
        self.out["approvals_unreversed"] = len(open_)
        # payments whose approval the bank reversed (a payment may be asked twice: at its
        # timeout and again when the late approval came)
        self.out["approvals_reversed"] = len({c.original_event_id for c in completed
                                              if c.reversed})
        self.out["reversals_by_reason"] = dict(Counter(
            r.reason for r in {(r.original_event_id, r.reason): r for r in asked}.values()))
        self.out["decisions"] = len({d.request_event_id for d in decisions})
        self.out["resent_payments"], self.out["resends"] = len(terms.resent), terms.resends
        self.out["sends_refused"] = terms.refused  # the bus did not take them: sent again
        self.out["sends_undelivered"] = terms.undelivered  # taken, never delivered: resent
        await asyncio.sleep(1.0)
        await cut_over(self.bootstrap, self.home, "final")
        ledger = outcomes.ledger_check(result.approved_seen, await settled(self.bootstrap))
        self.out["ledgers"] = ledger
        self.out["ledgers_balance"] = all(v["difference"] == 0 for v in ledger.values())
        self.out["time_to_recover_s"], self.out["recoveries"] = self.recovery(result)
        self.out["dead_letters"] = dict(Counter(
            e.error_code for e in await read_topic(self.bootstrap, DEAD_LETTERS.name,
                                                   DEAD_LETTERS.partitions)
            if isinstance(e, EventDeadLettered)))
        self.out["consumer_lag"] = await consumer_lag(self.bootstrap, {
            f"{NAMESPACE}-platform": [(PAYMENT_REQUESTS.name, PAYMENT_REQUESTS.partitions),
                                      (PROVIDER_RESULTS.name, PROVIDER_RESULTS.partitions)],
            **{f"{NAMESPACE}-provider-{p}": [(provider_requests_topic(p),
                                              PAYMENT_REQUESTS.partitions)] for p in PROVIDERS}})
        self.out["log_counts"] = self.log_counts()
        self.out["load_average_at_end"] = os.getloadavg()[0]
        self.out["ok"] = (self.out["lost"] == 0 and self.out["duplicated"] == 0
                          and self.out["ledgers_balance"] and not open_
                          and self.out["unexpected"] == 0)

    def account(self, terms: Terminals) -> outcomes.Outcomes:
        sent = [(s, terms.sent_ms[s.payment_id]) for s in self.sent
                if s.payment_id in terms.sent_ms]
        return outcomes.outcomes(sent, self.results.seen, terms.cancelled)

    def recovery(self, result: outcomes.Outcomes) -> tuple[float | None, list[dict[str, Any]]]:
        steps = [(s, log) for s, log in zip(self.scenario.steps, self.stage.log, strict=False)]
        fault_at = [float(log["at"]) for s, log in steps if s.fault]  # type: ignore[arg-type]
        steady, recs = outcomes.recoveries(result.latency_by_send, self.t0, fault_at)
        self.out["steady_p99_ms"] = steady
        found = [r.seconds for r in recs]
        worst = None if any(s is None for s in found) or not found else max(
            s for s in found if s is not None)
        return worst, [{"at": r.at, "seconds": r.seconds, "worst_p99_ms": r.worst_p99_ms}
                       for r in recs]

    def log_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for path in sorted(self.home.glob("*.log")):
            text = path.read_text(errors="replace")
            counts = {m: text.count(m) for m in LOG_MARKERS if m in text}
            if counts:
                out[path.stem] = counts
        return out


def _terminate(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    from cryptography.utils import CryptographyDeprecationWarning

    from cardbus.logs import configure

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    configure("WARNING")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker down: one line a ms
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGTERM, _terminate)  # so the workers are stopped on the way out
    run = Run(cfg)
    try:
        out = asyncio.run(run.run())
    finally:
        run.stage.stop_all()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
