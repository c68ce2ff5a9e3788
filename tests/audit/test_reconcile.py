"""Reconciliation over the events a real (handler-driven) platform and bank produced."""

from __future__ import annotations

from agents.providers.bank_a import adapter as bank_a
from audit.model import Record
from audit.reconcile import reconcile
from schemas.base import Event
from schemas.payments import AuthorizationDecided, PaymentCompleted
from streams import codec
from streams.topics import PROVIDER_RESULTS, TERMINAL_RESULTS
from tests.agents.conftest import NOW
from tests.agents.harness import Network, only, rec

T = "T-0001"
NOW_MS = int(NOW.timestamp() * 1000)
LATER = NOW_MS + 3_600_000


def _records(events: list[tuple[str, Event]], at_ms: int = NOW_MS) -> list[Record]:
    short = {PROVIDER_RESULTS.name: "provider-results", TERMINAL_RESULTS.name: "terminal-results"}
    return [Record(short.get(topic, topic), 0, i, at_ms, None, codec.encode(ev))
            for i, (topic, ev) in enumerate(events)]


async def _approved_payment(net: Network, amount: int) -> tuple[AuthorizationDecided,
                                                                 PaymentCompleted]:
    card = await net.issue("bank-a")
    await net.platform.on_request(rec(net.request(T, card, amount)))
    await net.deliver(net.sent.take())
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
    done = only([ev for _t, _k, ev in net.sent.take()], PaymentCompleted)
    return decision, done


async def test_heard_approvals_reconcile_and_unheard_ones_are_listed() -> None:
    net = Network(NOW)
    await net.join(bank_a)
    await net.enroll(T)
    dec1, done1 = await _approved_payment(net, 500)
    dec2, _unheard = await _approved_payment(net, 700)
    events = [(PROVIDER_RESULTS.name, dec1), (TERMINAL_RESULTS.name, done1),
              (PROVIDER_RESULTS.name, dec2)]
    result = reconcile(_records(events), now_ms=LATER)
    assert result.held_without_outcome == [dec2.correlation_id]
    assert result.outcome_without_decision == [] and not result.ok
    assert reconcile(_records(events), now_ms=NOW_MS + 1_000).in_flight == sorted(
        [dec1.correlation_id, dec2.correlation_id])


async def test_an_approval_told_without_a_bank_approval_is_listed() -> None:
    net = Network(NOW)
    await net.join(bank_a)
    await net.enroll(T)
    _dec, done = await _approved_payment(net, 900)
    result = reconcile(_records([(TERMINAL_RESULTS.name, done)]), now_ms=LATER)
    assert result.outcome_without_decision == [done.correlation_id] and not result.ok


async def test_a_cancelled_payment_whose_approval_was_reversed_reconciles() -> None:
    from datetime import timedelta

    from schemas.base import header
    from schemas.payments import PaymentCancelled, ReversalCompleted

    net = Network(NOW)
    await net.join(bank_a)
    await net.enroll(T)
    dec, done = await _approved_payment(net, 650)
    cancel = net.terminals[T].mac_event(PaymentCancelled(
        **header(f"terminal:{T}", dec.correlation_id, NOW + timedelta(seconds=30)),
        terminal_id=T, request_event_id=net.platform_tables.pending[dec.correlation_id][
            "request_event_id"], pan_token=dec.pan_token))
    await net.platform.on_request(rec(cancel))
    await net.deliver(net.sent.take())
    reversed_ = only([ev for _t, _k, ev in net.sent.take()], ReversalCompleted)
    assert reversed_.reversed
    events = [(PROVIDER_RESULTS.name, dec), (TERMINAL_RESULTS.name, done),
              ("payment-requests", cancel), (PROVIDER_RESULTS.name, reversed_)]
    result = reconcile(_records(events), now_ms=LATER)
    assert result.ok and result.held_without_outcome == []
    without_reversal = reconcile(_records(events[:3]), now_ms=LATER)
    assert without_reversal.held_without_outcome == [dec.correlation_id]


def test_a_top_up_the_operator_could_not_settle_is_listed_until_settled() -> None:
    from schemas.base import header
    from schemas.transit import TransitLoadConfirmed

    def answer(outcome: str) -> TransitLoadConfirmed:
        return TransitLoadConfirmed(
            **header("provider:transit", "pay-0001", NOW), operator_id="transit",
            request_event_id="load-0001", card_token="tok_" + "d" * 24, confirmed=outcome == "booked",
            outcome=outcome, balance=1_000)  # type: ignore[arg-type]

    unresolved = [(PROVIDER_RESULTS.name, answer("unresolved"))]
    result = reconcile(_records(unresolved), now_ms=LATER)
    assert result.loads_unresolved == ["pay-0001"] and not result.ok
    for later in ("booked", "voided"):
        settled = reconcile(_records([*unresolved, (PROVIDER_RESULTS.name, answer(later))]),
                            now_ms=LATER)
        assert settled.loads_unresolved == [] and settled.ok
