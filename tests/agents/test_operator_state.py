"""The transit operator's purse record after each answer, with literal values: what a
confirmation books (balance, loads, loaded amount, the open authorization closed, the answer
kept for repeats), what an abort voids, and what an unverifiable report leaves untouched."""

from __future__ import annotations

import hashlib

import pytest

from agents.providers.transit import Purse
from agents.providers.transit import adapter as operator
from bench.sim import World
from cardbus.errors import MacInvalid
from reader_agent.dialogue import credit_load
from schemas.transit import TransitLoadApplied, TransitLoadAuthorized, TransitLoadConfirmed
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp
from tests.agents.test_trust_transit import aborted, authorized, probe, report
from tests.agents.test_trust_transit import world as world


def _id(kind: str, source: str) -> str:
    return hashlib.sha256(f"transit:{kind}:{source}".encode()).hexdigest()[:32]


def _applied(top: TopUp, auth: TransitLoadAuthorized, tac: str) -> TransitLoadApplied:
    return top.terminal.mac_event(TransitLoadApplied(
        event_id="applied-0001", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
        request_event_id=auth.request_event_id, funding_pan_token=top.pending.pan_token,
        card_token=auth.card_token, amount=auth.amount, new_balance=auth.new_balance,
        load_counter=auth.load_counter, tac=tac))


def _forwarded(world: World, top: TopUp, ev: object) -> object:
    ((_, _, fwd),) = report(world, top, ev)  # type: ignore[arg-type]
    return fwd


def test_a_confirmation_books_the_load_once_and_closes_its_authorization(world: World) -> None:
    top, auth = authorized(world)
    assert top.purse is not None
    before = top.purse.model_copy(update={"loads": 2, "loaded_amount": 700})
    tac = credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2)).hex().upper()
    fwd = _forwarded(world, top, _applied(top, auth, tac))
    ans = operator.confirm_load(fwd, before, top.op)  # type: ignore[arg-type]
    rid = auth.request_event_id
    assert isinstance(ans.event, TransitLoadConfirmed)
    assert (ans.event.outcome, ans.event.confirmed, ans.event.balance) == ("booked", True, 6_000)
    assert ans.event.event_id == _id("confirmed", rid) and ans.event.request_event_id == rid
    assert (ans.purse.balance, ans.purse.loads, ans.purse.loaded_amount) == (6_000, 3, 5_700)
    assert ans.purse.authorized == {} and ans.purse.done == {
        rid: ans.event.model_dump(mode="json")}
    assert ans.purse.card_token == auth.card_token
    again = operator.confirm_load(fwd, ans.purse, top.op)  # type: ignore[arg-type]
    assert again.event == ans.event and again.purse == ans.purse


def test_an_unverifiable_proof_leaves_the_purse_as_it_was(world: World) -> None:
    top, auth = authorized(world)
    assert top.purse is not None
    before = top.purse
    fwd = _forwarded(world, top, _applied(top, auth, "00000000"))
    ans = operator.confirm_load(fwd, before, top.op)  # type: ignore[arg-type]
    assert ans.purse is before
    assert (ans.event.outcome, ans.event.confirmed) == ("unresolved", False)
    assert (ans.event.reason or "").startswith("proof of load: ")
    assert ans.event.event_id == _id("unresolved", fwd.event_id)  # type: ignore[attr-defined]
    unsealed = _applied(top, auth, "00000000")  # the terminal's MAC, not the platform's seal
    ans = operator.confirm_load(unsealed, before, top.op)
    assert ans.purse is before and ans.event.outcome == "unresolved"
    assert (ans.event.reason or "").startswith("not from the platform: ")
    assert ans.event.request_event_id == auth.request_event_id
    assert ans.event.card_token == auth.card_token and ans.event.balance == before.balance


def test_a_confirmation_without_a_purse_record_starts_one_for_that_card(world: World) -> None:
    top, auth = authorized(world)
    fwd = _forwarded(world, top, _applied(top, auth, "00000000"))
    ans = operator.confirm_load(fwd, None, top.op)  # type: ignore[arg-type]
    assert ans.purse == Purse(card_token=auth.card_token)
    assert (ans.event.outcome, ans.event.reason) == ("voided", "no authorized load to confirm")


def test_a_proven_abort_voids_and_is_answered_the_same_again(world: World) -> None:
    top, auth = authorized(world)
    assert top.purse is not None
    before = top.purse.model_copy(update={"balance": 1_000})
    evidence = probe(top, auth)
    fwd = _forwarded(world, top, aborted(top, auth, evidence))
    ans = operator.abort_load(fwd, before, top.op)  # type: ignore[arg-type]
    rid = auth.request_event_id
    assert (ans.event.outcome, ans.event.confirmed) == ("voided", False)
    assert ans.event.reason == "load aborted: card removed before the load"
    assert ans.event.event_id == _id("refused", fwd.event_id)  # type: ignore[attr-defined]
    assert ans.purse.authorized == {} and ans.purse.done == {
        rid: ans.event.model_dump(mode="json")}
    assert (ans.purse.balance, ans.purse.loads) == (1_000, 0)
    again = operator.abort_load(fwd, ans.purse, top.op)  # type: ignore[arg-type]
    assert again.event == ans.event and again.purse == ans.purse
    fresh = operator.abort_load(fwd, None, top.op)  # type: ignore[arg-type]
    assert fresh.purse.card_token == auth.card_token and fresh.event.outcome == "voided"


def test_an_abort_after_mac2_without_evidence_keeps_the_authorization_open(world: World) -> None:
    top, auth = authorized(world)
    assert top.purse is not None
    before = top.purse
    fwd = _forwarded(world, top, aborted(top, auth))
    ans = operator.abort_load(fwd, before, top.op)  # type: ignore[arg-type]
    assert ans.purse is before and ans.event.outcome == "unresolved"
    assert ans.event.reason == "load not proven aborted: no card evidence"
    with pytest.raises(MacInvalid) as err:
        top.op.check_probe(fwd, before.authorized[auth.request_event_id])  # type: ignore[arg-type]
    assert str(err.value) == "no card evidence"
