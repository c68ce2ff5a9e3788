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

from audit.engine import AuditOptions, audit_records
from audit.keys import build_keybook
from audit.model import Record
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


def run(events: int = 100_000, *, workers: int = 0, cache: Path | None = None,
        say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
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
    }
