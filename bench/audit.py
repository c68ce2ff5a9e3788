"""``cardbus bench audit``: audit >= 100,000 simulated events and measure, in the same run,
what Ed25519 verification alone does on one core and on the pool, and the ratio."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.engine import AuditOptions, audit_partitions, audit_records, finish
from audit.keys import build_keybook
from audit.model import Record
from audit.partial import Partial, parse_partitions
from bench.trail import simulate
from cardbus.crypto.signing import Signer

EVENTS_PER_PAYMENT = 5.3  # tap, request, authorization, decision, completion, + ticks/batches


def ed25519_verify_rate(seconds: float = 0.5, *, cpu: bool = False) -> float:
    """Ed25519 verifications per second on one core (600-byte message); per CPU second with
    ``cpu`` (what the core gives when it is not shared)."""
    signer = Signer.generate("bench")
    data = os.urandom(600)
    sig = signer.sign(data)
    verifier = signer.verifier
    n, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            verifier.verify(sig, data)
        n += 200
    took = (time.process_time() - cpu0) if cpu else (time.perf_counter() - start)
    return n / max(took, 1e-9)


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _pool_rate(workers: int, seconds: float = 0.5) -> float:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        return sum(pool.map(ed25519_verify_rate, [seconds] * workers))


def trail(events: int, cache: Path | None,
          say: Callable[[str], None]) -> tuple[list[Record], Path, float]:
    """The records (generated, or loaded from ``cache``), their key home, generation seconds."""
    home = cache or Path(tempfile.mkdtemp(prefix="cardbus-bench-audit-"))
    stored = home / "trail.pickle"
    if cache is not None and stored.exists():
        records: list[Record] = pickle.loads(stored.read_bytes())  # noqa: S301 - our own file
        if len(records) >= events:
            return records, home, 0.0
    home.mkdir(parents=True, exist_ok=True)
    payments = int(events / EVENTS_PER_PAYMENT) + 1
    say(f"generating ~{payments:,} payments in process ...")
    start = time.perf_counter()
    while True:
        result = simulate(home, payments, terminals=4, cards_per_provider=40,
                          cutover_every=2_000)
        if len(result.records) >= events:
            break
        payments = int(payments * events / len(result.records)) + 50
    took = time.perf_counter() - start
    if cache is not None:
        stored.write_bytes(pickle.dumps(result.records))
    return result.records, home, took


_SPLIT: list[tuple[list[Record], Path]] = []  # set before the fork, read by the children


def _part(spec: str) -> tuple[Partial, float]:
    """One process's part (one worker), and its CPU seconds."""
    records, home = _SPLIT[0]
    cpu0 = time.process_time()
    part = audit_partitions(records, AuditOptions("cardbus", home=home, workers=1,
                                                  partitions=parse_partitions(spec)),
                            build_keybook(home, []))
    return part, time.process_time() - cpu0


REPLAY_WEIGHT = 10
"""A provider request costs about ten other records (it is re-derived: EMV, PIN, seals)."""


def balanced_split(records: list[Record]) -> tuple[str, str]:
    """Two ``--partitions`` specs whose work is closest to equal: what an operator splitting
    by the partitions' sizes would choose (keys are not spread evenly: a few terminals fill
    the terminal-keyed topics' partitions)."""
    from audit.partial import is_payment_topic
    from audit.scan import provider_of
    from streams.topics import PAYMENT_PARTITIONS

    work = [0] * PAYMENT_PARTITIONS
    for rec in records:
        weight = REPLAY_WEIGHT if provider_of(rec.topic) else 1
        work[rec.partition if is_payment_topic(rec.topic) else 0] += weight
    best: tuple[int, list[int]] = (sum(work) + 1, [])
    for mask in range(1, 1 << PAYMENT_PARTITIONS, 2):  # the sets that hold partition 0
        mine = [p for p in range(PAYMENT_PARTITIONS) if mask >> p & 1]
        if len(mine) == PAYMENT_PARTITIONS:
            continue
        heavier = max(sum(work[p] for p in mine), sum(work) - sum(work[p] for p in mine))
        best = min(best, (heavier, mine))
    rest = [p for p in range(PAYMENT_PARTITIONS) if p not in best[1]]
    return ",".join(map(str, best[1])), ",".join(map(str, rest))


def _whole(_spec: str) -> tuple[Any, float]:
    """The one-process audit (one worker) in a forked child like the parts, and its CPU
    seconds."""
    records, home = _SPLIT[0]
    cpu0 = time.process_time()
    report = audit_records(records, AuditOptions("cardbus", home=home, workers=1),
                           build_keybook(home, []))
    return report, time.process_time() - cpu0


def _alone(task: Callable[[str], tuple[Any, float]], spec: str) -> tuple[Any, float]:
    """``task(spec)`` in a forked process of its own, nothing else of ours running."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(task, (spec,))


def split_run(records: list[Record], home: Path) -> dict[str, Any]:
    """The partition-parallel audit: one process over everything, then two processes over
    half the partitions each (forked, at the same time) and their merge, in the same run.

    On free cores (as on two hosts) the time is the longest part's CPU plus the merge's. The
    parts are measured both at the same time (this machine's two cores, shared: each runs
    slower than alone) and one after the other, each alone like the one-process audit (what
    a host of its own gives)."""
    specs = balanced_split(records)
    _SPLIT[:] = [(records, home)]
    start = time.perf_counter()
    one, one_cpu = _alone(_whole, "")
    one_s = time.perf_counter() - start
    ctx = multiprocessing.get_context("fork")
    cpu0, start = _cpu(), time.perf_counter()
    with ctx.Pool(2) as pool:
        parts = pool.map(_part, specs, chunksize=1)
    merge_cpu0 = time.process_time()
    merged = finish([p for p, _c in parts], AuditOptions("cardbus", home=home),
                    build_keybook(home, []))
    merge_cpu = time.process_time() - merge_cpu0
    two_s, two_cpu = time.perf_counter() - start, _cpu() - cpu0
    alone = [_alone(_part, spec)[1] for spec in specs]
    _SPLIT.clear()
    longest = max(c for _p, c in parts) + merge_cpu  # the critical path on free cores
    return {"split": list(specs), "one_process_s": round(one_s, 3),
            "one_process_cpu_s": round(one_cpu, 2),
            "one_process_per_cpu_s": round(one.events_read / one_cpu, 1),
            "two_processes_s": round(two_s, 3), "two_processes_cpu_s": round(two_cpu, 2),
            "part_cpu_s": [round(c, 2) for _p, c in parts], "merge_cpu_s": round(merge_cpu, 2),
            "part_cpu_alone_s": [round(c, 2) for c in alone],
            "speedup_two_processes": round(one_s / two_s, 3),
            "speedup_two_processes_on_free_cores": round(one_cpu / longest, 3),
            "speedup_two_processes_alone": round(one_cpu / (max(alone) + merge_cpu), 3),
            "split_same_findings": merged.findings == one.findings
            and merged.events_read == one.events_read}


def run(events: int = 100_000, *, workers: int = 0, cache: Path | None = None,
        say: Callable[[str], None] = lambda _m: None, split: bool = False) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    records, home, generated_s = trail(events, cache, say)
    cores = os.cpu_count() or 1
    workers = workers or cores
    say(f"{len(records):,} events; measuring Ed25519 verify ...")
    one = ed25519_verify_rate()
    one_cpu = ed25519_verify_rate(cpu=True)
    pooled = _pool_rate(workers) if workers > 1 else one
    say("auditing (verify only) ...")
    cpu0 = _cpu()
    quick = audit_records(records, AuditOptions("cardbus", home=home, workers=workers,
                                                rederive=False), build_keybook(home, []))
    cpu1 = _cpu()
    say("auditing (everything, with re-derivation) ...")
    full = audit_records(records, AuditOptions("cardbus", home=home, workers=workers),
                         build_keybook(home, []))
    cpu2 = _cpu()
    rate = full.events_read / full.seconds
    per_cpu_full = full.events_read / (cpu2 - cpu1)
    per_cpu_quick = quick.events_read / (cpu1 - cpu0)
    return {
        "events": full.events_read, "signed_events": full.checks["ed25519"],
        "mac_events": full.checks["hmac"], "unsealed_events": full.checks["none"],
        "workers": workers, "cores": cores, "generated_s": round(generated_s, 2),
        "audit_s": round(full.seconds, 3), "events_per_s": round(rate, 1),
        "verify_only_s": round(quick.seconds, 3),
        "verify_only_per_s": round(quick.events_read / quick.seconds, 1),
        "ed25519_verify_per_s_1core": round(one, 1),
        "ed25519_verify_per_s_pool": round(pooled, 1),
        "ratio": round(rate / pooled, 3),
        "load_average": round(os.getloadavg()[0], 2),
        "ed25519_verify_per_cpu_s": round(one_cpu, 1),
        "events_per_cpu_s": round(per_cpu_full, 1),
        "verify_only_per_cpu_s": round(per_cpu_quick, 1),
        "events_per_s_on_free_cores": round(per_cpu_full * min(workers, cores), 1),
        "verify_only_per_s_on_free_cores": round(per_cpu_quick * min(workers, cores), 1),
        "rederived_matching": full.checks["re-derived outputs matching byte for byte"],
        "ok": full.ok and quick.ok, "findings": len(full.findings),
    } | (split_run(records, home) if split else {})
