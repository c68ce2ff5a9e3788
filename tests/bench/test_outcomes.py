"""The arithmetic of ``cardbus bench chaos`` (``bench.outcomes``): one outcome per payment at its
terminal, what counts as lost or duplicated, ledgers against outcomes, time to recover."""

from __future__ import annotations

from bench.outcomes import ledger_check, outcomes, recoveries
from bench.stats import Seen, Sent


def seen(pid: str, code: str = "00", at: int = 0, auth: str | None = "A1") -> Seen:
    return Seen(pid, code, code == "00", 0, auth if code == "00" else None, at)


def test_each_payment_ends_in_its_first_answer_or_its_cancellation() -> None:
    sent = [(Sent(f"p{i}", "bank-a" if i % 2 else "bank-b", 100 * (i + 1)), 1000 * i)
            for i in range(6)]
    answers = [seen("p0", at=40), seen("p1", "91", at=1050),
               seen("p2", at=2030), seen("p2", at=2090),  # a resend answered from the record
               seen("p3", at=3050), seen("p3", "05", at=3070),  # two different outcomes
               seen("p4", at=9000),  # after the terminal cancelled: ignored there
               seen("zz", at=10)]  # not ours
    got = outcomes(sent, answers, {"p4": 8.0})
    assert (got.requests, got.answered, got.cancelled, got.lost) == (6, 4, 1, 1)  # p5 lost
    assert (got.duplicated, got.repeated, got.late_answers, got.unexpected) == (1, 1, 1, 1)
    assert got.codes == {"00": 3, "91": 1}
    # approvals the terminals were told about, by bank: p0 (b) 100, p2 (b) 300, p3 (a) 400
    assert got.approved_seen == {"bank-a": 400, "bank-b": 400}
    lat = dict(got.latency_by_send)
    assert lat[0.0] == 40 and lat[2.0] == 30 and lat[4.0] is None and lat[5.0] is None
    assert got.as_dict()["final_outcomes"] == 5


def test_ledgers_against_outcomes() -> None:
    check = ledger_check({"bank-a": 500, "bank-b": 0}, {"bank-a": 500, "bank-b": 120})
    assert check == {"bank-a": {"approved_seen": 500, "settled": 500, "difference": 0},
                     "bank-b": {"approved_seen": 0, "settled": 120, "difference": 120}}


def _series(bad: dict[int, float], seconds: int = 30, per_s: int = 10
            ) -> list[tuple[float, float | None]]:
    """``per_s`` payments a second at 20 ms, except the seconds in ``bad`` (their latency)."""
    return [(100 + s + i / per_s, bad.get(s, 20.0)) for s in range(seconds)
            for i in range(per_s)]


def test_time_to_recover_from_each_fault() -> None:
    # fault at 6 s: slow from 8 to 11 s; fault at 14 s: slow 15-16 s
    series = _series({8: 900.0, 9: 4000.0, 10: 300.0, 11: 100.0, 15: 500.0, 16: 200.0})
    steady, recs = recoveries(series, 100.0, [6.0, 14.0])
    assert steady == 20.0
    assert [(r.at, r.seconds, r.worst_p99_ms) for r in recs] == [
        (6.0, 6.0, 4000.0), (14.0, 3.0, 500.0)]


def test_the_steady_p99_leaves_out_payments_in_flight_at_the_fault() -> None:
    # sent 5.0-5.9 s, answered after the fault at 6 s: they belong to the fault
    series = [(t, lat if t < 105 else 8000.0) for t, lat in _series({})]
    steady, _ = recoveries(series, 100.0, [6.0])
    assert steady == 20.0


def test_no_disturbance_is_zero_and_a_run_that_ends_slow_never_recovered() -> None:
    _, recs = recoveries(_series({}), 100.0, [6.0])
    assert recs[0].seconds == 0.0
    cancelled = _series({})
    cancelled[-5] = (cancelled[-5][0], None)  # cancelled near the end: infinitely late
    _, recs = recoveries(cancelled, 100.0, [6.0])
    assert recs[0].seconds is None and recs[0].worst_p99_ms is None
