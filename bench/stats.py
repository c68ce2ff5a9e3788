"""Pure benchmark arithmetic: latency percentiles, the correctness accounting, the machine.

No Kafka here: the runner feeds what it saw (requests sent, results read, ledger totals) and
these functions say what it adds up to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cardbus.machine import describe


def percentiles(samples_ms: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of latency samples in ms; zeros for no samples."""
    data = sorted(samples_ms)
    if not data:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "count": 0}

    def rank(q: float) -> float:
        index = max(0, min(len(data) - 1, int(-(-q * len(data) // 1)) - 1))
        return float(data[index])

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": float(data[-1]),
            "count": len(data)}


@dataclass(frozen=True)
class Sent:
    """One payment request the load generator published."""

    payment_id: str
    provider_id: str
    amount: int


@dataclass(frozen=True)
class Seen:
    """One result a terminal received."""

    payment_id: str
    response_code: str
    approved: bool
    amount: int


@dataclass
class Accounting:
    """Every request has exactly one result, and the ledgers match the approvals."""

    requests: int = 0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # results for payments this run never sent
    codes: dict[str, int] = field(default_factory=dict)
    approved_by_provider: dict[str, int] = field(default_factory=dict)  # minor units
    ledger_by_provider: dict[str, int] = field(default_factory=dict)
    ledger_mismatch: dict[str, int] = field(default_factory=dict)  # ledger - approvals

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.unexpected == 0
                and not self.ledger_mismatch)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "results": self.results, "lost": self.lost,
                "duplicated": self.duplicated, "unexpected": self.unexpected,
                "response_codes": dict(sorted(self.codes.items())),
                "approved_minor_units": dict(sorted(self.approved_by_provider.items())),
                "ledger_minor_units": dict(sorted(self.ledger_by_provider.items())),
                "ledger_mismatch": dict(sorted(self.ledger_mismatch.items())),
                "ok": self.ok}


def account(sent: Iterable[Sent], seen: Iterable[Seen],
            ledger: Mapping[str, int] | None = None) -> Accounting:
    """Match results to requests by payment id; compare each provider's ledger movement
    (``ledger``: provider id -> minor units debited, from the settlement batches and open
    holds) with the approvals the terminals saw. ``None`` skips the ledger check."""
    by_id = {s.payment_id: s for s in sent}
    counts: Counter[str] = Counter()
    acc = Accounting(requests=len(by_id))
    approved: dict[str, int] = dict.fromkeys(sorted({s.provider_id for s in by_id.values()}), 0)
    for result in seen:
        acc.results += 1
        counts[result.payment_id] += 1
        request = by_id.get(result.payment_id)
        if request is None:
            acc.unexpected += 1
            continue
        if counts[result.payment_id] > 1:
            continue
        acc.codes[result.response_code] = acc.codes.get(result.response_code, 0) + 1
        if result.approved:
            approved[request.provider_id] += request.amount
    acc.lost = sum(1 for pid in by_id if counts[pid] == 0)
    acc.duplicated = sum(n - 1 for pid, n in counts.items() if n > 1 and pid in by_id)
    acc.approved_by_provider = approved
    if ledger is not None:
        acc.ledger_by_provider = dict(ledger)
        for provider in sorted(set(approved) | set(ledger)):
            diff = ledger.get(provider, 0) - approved.get(provider, 0)
            if diff:
                acc.ledger_mismatch[provider] = diff
    return acc


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    return describe()


def limit(processes: Mapping[str, Mapping[str, float]], payments_per_s: float,
          cores: int) -> dict[str, Any]:
    """What limits a closed-loop run, from each process's CPU (percent of one core).

    ``cpu_ms_per_payment`` is each process's CPU per answered payment; their sum is the
    machine's cost of one payment, so ``cores * 1000 / sum`` is the rate the cores could carry
    if nothing waited. A run whose processes used at least 80% of the cores is CPU-bound (more
    workers on the same cores cannot help); below that, something waits. (Other work on the
    machine and the profiler are not counted, so 80% of the cores counts as CPU-bound.)"""
    per = {name: round(u["cpu_percent"] * 10 / payments_per_s, 2) if payments_per_s else 0.0
           for name, u in processes.items()}
    used = sum(u["cpu_percent"] for u in processes.values()) / (100 * cores)
    total = sum(per.values())
    hottest = max(per, key=per.__getitem__) if per else None
    return {"cpu_share_of_cores": round(used, 3), "cpu_ms_per_payment": per,
            "cpu_ms_per_payment_total": round(total, 2),
            "cpu_ceiling_payments_per_s": round(cores * 1000 / total, 1) if total else 0.0,
            "bound": "cpu" if used >= 0.8 else "waiting", "hottest": hottest}
