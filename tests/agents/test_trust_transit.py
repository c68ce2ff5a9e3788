"""Issue 22, findings 2 and 4 for top-ups: after MAC2 no reversal on a terminal's word (the
card's own evidence, or reconciliation), the operator honours only aborts the platform sealed,
and the platform takes operator answers only from the operator and for the load it sent."""

from __future__ import annotations

import dataclasses

import pytest

from agents.platform import decide as platform
from agents.platform import transit as platform_transit
from agents.providers.bank_a import adapter as bank_a
from agents.providers.state import ChainHead, OpenBatch
from agents.providers.transit import adapter as operator
from bench.sim import World
from cardbus.crypto.transit import probe_terminal_id
from cardbus.errors import CardError, CryptoError
from reader_agent.dialogue import credit_load, init_load, read_purse
from schemas.payments import ReversalRequested
from schemas.transit import (
    PurseProbe,
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
)
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp

OTHER = dataclasses.replace(operator, provider_id="transit-2", name="Other Transit",
                            aid="A000000632010106", transit_aids=("A000000632010106",))


@pytest.fixture
def world() -> World:
    return World.build([bank_a, operator, OTHER], [T], NOW)


def authorized(world: World) -> tuple[TopUp, TransitLoadAuthorized]:
    top = TopUp(world)
    top.pay()
    auth = top.operator(top.forward(top.load_request()))
    assert isinstance(auth, TransitLoadAuthorized)
    ((_, _, to_terminal),) = top.back(auth)
    assert top.pending.load_stage == "authorized"
    return top, to_terminal


def aborted(top: TopUp, auth: TransitLoadAuthorized, evidence: PurseProbe | None = None,
            n: int = 1) -> TransitLoadAborted:
    return top.terminal.mac_event(TransitLoadAborted(
        event_id=f"abort-{n:04d}", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
        request_event_id=auth.request_event_id, funding_pan_token=top.pending.pan_token,
        card_token=auth.card_token, reason="card removed before the load",
        evidence=evidence))


def probe(top: TopUp, auth: TransitLoadAuthorized) -> PurseProbe:
    """The card's answer to INITIALIZE FOR LOAD with the MAC2 challenge as terminal id."""
    read_purse(top.link, top.purse_profile.aid)
    init = init_load(top.link, top.amount, probe_terminal_id(bytes.fromhex(auth.mac2)))
    return PurseProbe(balance=init.balance, load_counter=init.online_seq,
                      card_random=init.random.hex().upper(), probe_amount=top.amount,
                      mac1=init.mac1.hex().upper())


def report(world: World, top: TopUp, ev: TransitLoadAborted | TransitLoadApplied
           ) -> list[tuple[str, str, object]]:
    top.pending, out = platform_transit.card_report(ev, pending=top.pending, hsm=world.platform,
                                                    received_at=NOW)
    return out.events  # type: ignore[return-value]


def reversals(events: list[tuple[str, str, object]]) -> list[object]:
    return [ev for _, _, ev in events if isinstance(ev, ReversalRequested)]


def test_abort_after_mac2_without_card_evidence_goes_to_reconciliation(world: World) -> None:
    """The finding as reproduced: the purse credited (1000 -> 6000), then the terminal's
    TransitLoadAborted reversed the funding payment. Now: no reversal, reconciliation."""
    top, auth = authorized(world)
    credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))  # the card took it
    events = report(world, top, aborted(top, auth))
    assert reversals(events) == [] and top.pending.load_stage == "voiding"
    ((role, _, forwarded),) = events
    assert role == "provider:transit"
    answer = top.operator(forwarded)
    assert isinstance(answer, TransitLoadConfirmed)
    assert (answer.outcome, answer.confirmed) == ("unresolved", False)
    assert reversals(top.back(answer)) == []
    assert top.pending.load_stage == "reconcile" and not top.pending.reversed
    assert read_purse(top.link, top.purse_profile.aid).balance == 6_000
    assert top.purse is not None and auth.request_event_id in top.purse.authorized  # still open


def test_abort_after_mac2_with_the_card_s_evidence_voids_and_reverses(world: World) -> None:
    top, auth = authorized(world)
    evidence = probe(top, auth)  # the card never took the load: sequence 0, balance 1000
    assert (evidence.load_counter, evidence.balance) == (0, 1_000)
    events = report(world, top, aborted(top, auth, evidence))
    assert reversals(events) == []  # not yet: the operator checks the card's evidence
    answer = top.operator(events[0][2])
    assert (answer.outcome, answer.confirmed) == ("voided", False)
    assert len(reversals(top.back(answer))) == 1
    assert top.pending.load_stage == "failed" and top.pending.reversed
    with pytest.raises(CardError, match="status 9302"):  # the MAC2 is void on the card too
        credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))


def test_evidence_from_before_mac2_is_not_evidence(world: World) -> None:
    """The load request's own INITIALIZE FOR LOAD (sequence 0, balance 1000) shown again: its
    MAC1 does not cover the MAC2 challenge."""
    top, auth = authorized(world)
    stale = PurseProbe(balance=1_000, load_counter=0, card_random="00000000",
                       probe_amount=top.amount, mac1="00000000")
    credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))
    answer = top.operator(report(world, top, aborted(top, auth, stale))[0][2])
    assert answer.outcome == "unresolved" and "card evidence" in (answer.reason or "")


def test_evidence_that_the_card_took_the_load_is_not_a_void(world: World) -> None:
    top, auth = authorized(world)
    credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))
    evidence = probe(top, auth)  # sequence 1, balance 6000: the card has it
    answer = top.operator(report(world, top, aborted(top, auth, evidence))[0][2])
    assert answer.outcome == "unresolved" and "online sequence is 1" in (answer.reason or "")


def test_the_operator_does_not_honour_an_abort_the_platform_did_not_seal(world: World) -> None:
    top, auth = authorized(world)
    terminal_made = aborted(top, auth, probe(top, auth))  # terminal MAC, not the platform's
    with pytest.raises(CryptoError):
        operator.abort_load(terminal_made, top.purse, top.op)
    unsealed = terminal_made.model_copy(update={"seal": None, "producer": "platform"})
    with pytest.raises(CryptoError):
        operator.abort_load(unsealed, top.purse, top.op)
    assert top.purse is not None and auth.request_event_id in top.purse.authorized


def test_a_bad_proof_of_load_is_unresolved_not_reversed(world: World) -> None:
    top, auth = authorized(world)
    applied = top.terminal.mac_event(TransitLoadApplied(
        event_id="applied-0001", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
        request_event_id=auth.request_event_id, funding_pan_token=top.pending.pan_token,
        card_token=auth.card_token, amount=auth.amount, new_balance=auth.new_balance,
        load_counter=auth.load_counter, tac="00000000"))
    answer = top.operator(report(world, top, applied)[0][2])
    assert answer.outcome == "unresolved"
    assert reversals(top.back(answer)) == [] and top.pending.load_stage == "reconcile"


def test_abort_before_mac2_still_reverses(world: World) -> None:
    top = TopUp(world)
    top.pay()
    top.forward(top.load_request())  # requested; no MAC2 has reached the terminal
    auth_like = TransitLoadAuthorized.model_construct(request_event_id=top.pending.load_request_id,
                                                      card_token=top.pending.card_token)
    events = report(world, top, aborted(top, auth_like))  # type: ignore[arg-type]
    assert len(reversals(events)) == 1 and top.pending.load_stage == "failed"


# -- finding 4: answers from the operator the load went to, about this load -----------------

def test_an_answer_sealed_by_another_operator_answers_nothing(world: World) -> None:
    top = TopUp(world)
    top.pay()
    forwarded = top.forward(top.load_request())
    auth = top.operator(forwarded)
    impostor = world.providers["transit-2"].sign_event(auth.model_copy(update={
        "operator_id": "transit-2"}))
    with pytest.raises(platform.Rejected, match="does not match the load"):
        platform_transit.operator_answer(impostor, pending=top.pending,
                                         route=world.routes["transit-2"], hsm=world.platform)
    assert top.pending.load_stage == "requested"


def test_mac2_for_another_amount_is_refused(world: World) -> None:
    top = TopUp(world)
    top.pay()
    auth = top.operator(top.forward(top.load_request()))
    bigger = world.providers["transit"].sign_event(auth.model_copy(update={
        "amount": auth.amount.model_copy(update={"amount": auth.amount.amount + 1})}))
    with pytest.raises(platform.Rejected, match="authorizes"):
        top.back(bigger)


def test_a_bank_decision_for_another_provider_s_payment_is_refused(world: World) -> None:
    card = world.issue("bank-a")
    req = world.pay(T, card, amount=1_500, when=NOW)
    pending, out = platform.request_payment(req, received_at=NOW,
                                            terminal=world.terminal_records[T],
                                            routes=world.routes, hsm=world.platform)
    assert pending is not None
    ((_, _, auth),) = out.events
    top = TopUp(world)
    decided = bank_a.authorize(auth, card=card.card, account=card.account,  # type: ignore[arg-type]
                               chain=ChainHead(), batch=OpenBatch(), processed=None,
                               crypto=top.issuer).decision
    other = world.providers["transit"].sign_event(decided.model_copy(update={
        "provider_id": "transit"}))
    with pytest.raises(platform.Rejected, match="does not match payment"):
        platform.take_decision(other, pending=pending, route=world.routes["transit"],
                               hsm=world.platform)
    cheaper = world.providers["bank-a"].sign_event(decided.model_copy(update={
        "amount": decided.amount.model_copy(update={"amount": 1})}))
    with pytest.raises(platform.Rejected, match="does not match payment"):
        platform.take_decision(cheaper, pending=pending, route=world.routes["bank-a"],
                               hsm=world.platform)

