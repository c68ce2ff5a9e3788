"""Tampering cases of issue 20: each caught at the record it happened to."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from audit.model import ANSWER, CHAIN, COMPLETENESS, LEDGER, PLATFORM, REDERIVE, Record
from bench.trail import Trail
from cardbus import ceremony
from schemas.payments import AuthorizationDecided, PaymentCompleted
from schemas.settlement import SettlementBatchClosed
from streams import codec
from tests.audit.conftest import pick, replace, run

Trailed = tuple[Trail, Path]


def _where(rec: Record) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset


def test_platform_answer_contradicting_the_banks_decision_is_one_finding(
        trail_home: Trailed) -> None:
    """The platform (its own key: an insider) tells the terminal the opposite of what the bank
    decided: one answer finding, at that answer."""
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 10)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentCompleted) and ev.response_code != "91"
    flipped = ceremony.platform_hsm(home).sign_event(ev.model_copy(update={
        "response_code": "05" if ev.approved else "00", "approved": not ev.approved,
        "seal": None}))
    report = run(replace(trail.records, rec, flipped), home)
    assert [(f.kind, f.where()) for f in report.findings] == [(ANSWER, _where(rec))]


def test_decision_republished_under_a_new_event_id_is_caught_at_that_record(
        trail_home: Trailed) -> None:
    """The bank's key re-signs a recorded decision under a new event id: the copy is not the
    answer to any request, and its chain position repeats (both at the copy, nothing else)."""
    trail, home = trail_home
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 20)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationDecided)
    copy = ceremony.provider_hsm(ev.provider_id, home).sign_event(
        ev.model_copy(update={"event_id": "f" * 32, "seal": None}))
    last = max(r.offset for r in trail.records if (r.topic, r.partition) ==
               (rec.topic, rec.partition))
    extra = dataclasses.replace(rec, offset=last + 1, value=codec.encode(copy),
                                timestamp_ms=rec.timestamp_ms + 5_000)
    report = run([*trail.records, extra], home)
    assert {f.where() for f in report.findings} == {_where(extra)}
    assert {f.kind for f in report.findings} == {REDERIVE, CHAIN}


def test_dropped_reversal_is_caught(trail_home: Trailed) -> None:
    """A timeout reversal removed from the bank's topic: the payment's timeout has no reversal
    (at its outcome), the bank's recorded answer to it has no request, and the platform's
    re-derivation misses it at the clock tick that timed the payment out."""
    trail, home = trail_home
    rec = pick(trail.records, "provider.bank-a.requests", "ReversalRequested", 0)
    report = run(replace(trail.records, rec), home)
    kinds = {f.kind for f in report.findings}
    assert kinds == {REDERIVE, COMPLETENESS, PLATFORM}
    assert any(f.kind == COMPLETENESS and f.topic == "terminal-results"
               and "no timeout reversal" in f.reason for f in report.findings)
    [missed] = [f for f in report.findings if f.kind == PLATFORM]
    tick = next(r for r in trail.records if r.topic == missed.topic
                and r.partition == missed.partition and r.offset == missed.offset)
    assert b'"type":"ClockTicked"' in (tick.value or b"") and "not recorded" in missed.reason


def _omit_one_approval(trail: Trail, home: Path) -> tuple[Record, SettlementBatchClosed]:
    """A settlement batch re-signed by its bank's key with one approval left out of its
    totals (count and amount), its sequence range unchanged."""
    rec = next(r for r in trail.records if r.topic == "settlements"
               and (ev := codec.decode(None, r.value)).totals  # type: ignore[union-attr]
               and ev.totals[0].approved_count > 1)  # type: ignore[union-attr]
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, SettlementBatchClosed)
    decisions = [codec.decode(None, r.value) for r in trail.records
                 if r.topic == "provider-results" and r.value
                 and b'"type":"AuthorizationDecided"' in r.value]
    chain = f"{ev.provider_id}.{ev.batch_id.rsplit('.', 1)[-1]}"
    approval = next(d for d in decisions if isinstance(d, AuthorizationDecided)
                    and d.chain_id == chain and d.approved
                    and ev.first_sequence <= d.sequence <= ev.last_sequence
                    and d.amount.currency == ev.totals[0].currency)
    total = ev.totals[0]
    less = total.model_copy(update={
        "approved_count": total.approved_count - 1,
        "approved_amount": total.approved_amount - approval.amount.amount,
        "net_amount": total.net_amount - approval.amount.amount})
    forged = ceremony.provider_hsm(ev.provider_id, home).sign_event(
        ev.model_copy(update={"totals": (less, *ev.totals[1:]), "seal": None}))
    return rec, forged


def test_batch_that_omits_one_approval_is_caught_at_the_batch(trail_home: Trailed) -> None:
    """The totals no longer add up to the batch's decisions (ledger), and the batch is not
    the one its cut-over re-derives (re-derivation): both at the batch, nothing elsewhere;
    without re-derivation, the one ledger finding."""
    trail, home = trail_home
    rec, forged = _omit_one_approval(trail, home)
    records = replace(trail.records, rec, forged)
    report = run(records, home)
    assert {f.where() for f in report.findings} == {_where(rec)}
    assert sorted(f.kind for f in report.findings) == [LEDGER, REDERIVE]
    assert forged.batch_id in next(f.reason for f in report.findings if f.kind == LEDGER)
    alone = run(records, home, rederive=False)
    assert [(f.kind, f.where()) for f in alone.findings] == [(LEDGER, _where(rec))]
