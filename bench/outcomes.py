"""Pure arithmetic of a fault run: each payment's final outcome at its terminal, what went
wrong, and how long the latency took to come back after each fault.

No Kafka here: the runner feeds the requests it sent (with their scheduled send times), the
answers the terminals read, the payments the terminals cancelled at their deadline, and what
the banks settled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Seen, Sent, percentiles


@dataclass
class Outcomes:
    """One final outcome per payment at its terminal, and the exceptions to that."""

    requests: int = 0
    answered: int = 0
    cancelled: int = 0  # no answer by the terminal's deadline: it cancelled the payment
    lost: int = 0  # neither answered nor cancelled
    duplicated: int = 0  # payments told two different outcomes
    repeated: int = 0  # the same answer delivered again (a resend answered from the record)
    late_answers: int = 0  # answers read after the terminal had cancelled
    unexpected: int = 0  # answers to payments this run never sent
    codes: dict[str, int] = field(default_factory=dict)
    approved_seen: dict[str, int] = field(default_factory=dict)  # provider -> minor units
    latency_by_send: list[tuple[float, float | None]] = field(default_factory=list)
    """(scheduled send time s, latency ms or None when cancelled), one per payment."""

    def as_dict(self) -> dict[str, Any]:
        answered_lat = [lat for _, lat in self.latency_by_send if lat is not None]
        return {"requests": self.requests, "final_outcomes": self.answered + self.cancelled,
                "answered": self.answered, "cancelled": self.cancelled, "lost": self.lost,
                "duplicated": self.duplicated, "repeated": self.repeated,
                "late_answers": self.late_answers, "unexpected": self.unexpected,
                "response_codes": dict(sorted(self.codes.items())),
                "approved_seen_minor_units": dict(sorted(self.approved_seen.items())),
                "latency_ms": percentiles(answered_lat)}


def _decision(s: Seen) -> tuple[str, bool, str | None]:
    return (s.response_code, s.approved, s.auth_code)


def outcomes(sent: Iterable[tuple[Sent, int]], seen: Iterable[Seen],
             cancelled: Mapping[str, float]) -> Outcomes:
    """Each payment's outcome: its first answer, unless the terminal cancelled it first
    (``sent``: request and scheduled send time in ms; ``cancelled``: payment id -> when, s)."""
    requests = {s.payment_id: (s, at) for s, at in sent}
    answers: dict[str, list[Seen]] = defaultdict(list)
    out = Outcomes(requests=len(requests))
    for s in sorted(seen, key=lambda x: x.at_ms):
        if s.payment_id not in requests:
            out.unexpected += 1
            continue
        answers[s.payment_id].append(s)
    out.approved_seen = dict.fromkeys(sorted({r.provider_id for r, _ in requests.values()}), 0)
    for pid, (req, sent_ms) in requests.items():
        got = answers.get(pid, [])
        distinct = {_decision(a) for a in got}
        out.duplicated += 1 if len(distinct) > 1 else 0
        out.repeated += len(got) - len(distinct)
        if pid in cancelled:
            out.cancelled += 1
            out.late_answers += 1 if got else 0
            out.latency_by_send.append((sent_ms / 1000, None))
            continue
        if not got:
            out.lost += 1
            out.latency_by_send.append((sent_ms / 1000, None))
            continue
        first = got[0]
        out.answered += 1
        out.codes[first.response_code] = out.codes.get(first.response_code, 0) + 1
        if first.approved:
            out.approved_seen[req.provider_id] += req.amount
        out.latency_by_send.append((sent_ms / 1000, float(first.at_ms - sent_ms)))
    return out


def ledger_check(approved_seen: Mapping[str, int], settled: Mapping[str, int]
                 ) -> dict[str, dict[str, int]]:
    """Per provider: what the terminals were told was approved, what the bank settled, and
    the difference (0 when the ledger matches the outcomes)."""
    return {p: {"approved_seen": approved_seen.get(p, 0), "settled": settled.get(p, 0),
                "difference": settled.get(p, 0) - approved_seen.get(p, 0)}
            for p in sorted(set(approved_seen) | set(settled))}


def p99(values: Sequence[float]) -> float | None:
    return percentiles(values)["p99"] if values else None


@dataclass(frozen=True)
class Recovery:
    """How the latency came back after one fault."""

    at: float  # seconds from the start of the phase
    seconds: float | None  # from the fault to p99 back at its steady value (None: not within)
    worst_p99_ms: float | None  # the worst one-second p99 after the fault


def recoveries(latency_by_send: Iterable[tuple[float, float | None]], start: float,
               faults: Sequence[float], *, steady_from: float = 2.0, window: float = 1.0,
               hold: int = 3, factor: float = 1.5, slack_ms: float = 25.0
               ) -> tuple[float | None, list[Recovery]]:
    """The steady p99 (payments sent from ``steady_from`` s and answered before the first
    fault: those in flight at the fault belong to it), and for
    each fault (seconds after ``start``) the time from the fault to the end of the last
    one-second window (of payments by send time, before the next fault) whose p99 exceeded
    ``max(factor * steady, steady + slack_ms)``: 0 if none did, None if the last ``hold``
    windows of the run still did (not recovered). A cancelled payment is infinitely late."""
    rel = sorted((t - start, lat) for t, lat in latency_by_send)
    first_fault = min(faults) if faults else float("inf")
    steady = p99([lat for t, lat in rel
                  if lat is not None and steady_from <= t and t + lat / 1000 < first_fault])
    if steady is None:
        return None, [Recovery(f, None, None) for f in faults]
    limit = max(factor * steady, steady + slack_ms)
    end = rel[-1][0] if rel else 0.0
    bounds = sorted(faults)
    out = []
    for fault in faults:
        later = [f for f in bounds if f > fault]
        stop = later[0] if later else end + window
        windows = []
        t = fault
        while t < stop:
            lats = [float("inf") if lat is None else lat
                    for s, lat in rel if t <= s < min(t + window, stop)]
            if lats:
                windows.append((t, p99(lats) or 0.0))
            t += window
        bad = [w for w, v in windows if v > limit]
        worst = max((v for _, v in windows), default=None)
        worst_ms = None if worst is None or worst == float("inf") else round(worst, 1)
        if not bad:
            seconds: float | None = 0.0
        elif not later and bad[-1] >= end - hold * window:
            seconds = None
        else:
            seconds = round(min(bad[-1] + window, stop) - fault, 1)
        out.append(Recovery(fault, seconds, worst_ms))
    return steady, out
