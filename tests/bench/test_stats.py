"""The benchmark's accounting: a lost, duplicated or unbalanced payment fails the run."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench import stats
from bench.stats import Seen, Sent, account, percentiles


def _sent(n: int) -> list[Sent]:
    return [Sent(f"p{i}", "bank-a" if i % 2 else "bank-b", 100 + i) for i in range(n)]


def _answers(sent: list[Sent]) -> list[Seen]:
    return [Seen(s.payment_id, "00", True, s.amount) for s in sent]


def _ledger(sent: list[Sent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sent:
        out[s.provider_id] = out.get(s.provider_id, 0) + s.amount
    return out


def test_every_request_one_result_and_balanced_ledger_is_ok() -> None:
    sent = _sent(10)
    acc = account(sent, _answers(sent), _ledger(sent))
    assert acc.ok and acc.lost == 0 and acc.duplicated == 0
    assert acc.codes == {"00": 10}
    assert acc.approved_by_provider == _ledger(sent)


def test_a_lost_payment_fails() -> None:
    sent = _sent(10)
    acc = account(sent, _answers(sent)[1:], None)
    assert acc.lost == 1 and not acc.ok


def test_a_duplicated_result_fails_and_counts_once_in_the_ledger() -> None:
    sent = _sent(4)
    seen = [*_answers(sent), _answers(sent)[2]]
    acc = account(sent, seen, _ledger(sent))
    assert acc.duplicated == 1 and not acc.ok
    assert not acc.ledger_mismatch  # the approval itself is counted once


def test_a_double_debit_in_the_ledger_fails() -> None:
    sent = _sent(4)
    ledger = _ledger(sent)
    ledger["bank-a"] += sent[1].amount
    acc = account(sent, _answers(sent), ledger)
    assert acc.ledger_mismatch == {"bank-a": sent[1].amount} and not acc.ok


def test_declines_are_not_in_the_ledger_and_unknown_results_fail() -> None:
    sent = _sent(4)
    seen = [Seen(s.payment_id, "51", False, s.amount) for s in sent]
    acc = account(sent, seen, {})
    assert acc.ok and acc.codes == {"51": 4}
    acc = account(sent, [*seen, Seen("other", "00", True, 1)], {})
    assert acc.unexpected == 1 and not acc.ok


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300))
def test_percentiles_are_ordered_samples(samples: list[int]) -> None:
    p = percentiles(samples)
    assert p["p50"] <= p["p95"] <= p["p99"] <= p["max"] == max(samples)
    assert all(p[q] in samples for q in ("p50", "p95", "p99"))
    assert p["count"] == len(samples)


def test_percentiles_nearest_rank() -> None:
    p = percentiles(range(1, 101))
    assert (p["p50"], p["p95"], p["p99"], p["max"]) == (50, 95, 99, 100)


def test_limit_names_the_cpu_cost_per_payment_and_the_bound() -> None:
    procs = {"platform-1": {"cpu_percent": 60.0}, "bank-a-1": {"cpu_percent": 40.0},
             "broker": {"cpu_percent": 80.0}}
    got = stats.limit(procs, 200.0, cores=2)
    assert got["cpu_ms_per_payment"] == {"platform-1": 3.0, "bank-a-1": 2.0, "broker": 4.0}
    assert got["cpu_ms_per_payment_total"] == 9.0
    assert got["cpu_ceiling_payments_per_s"] == round(2000 / 9, 1)
    assert got["bound"] == "cpu" and got["hottest"] == "broker"
    idle = stats.limit({"platform-1": {"cpu_percent": 30.0}}, 100.0, cores=2)
    assert idle["bound"] == "waiting" and idle["cpu_share_of_cores"] == 0.15
