"""The platform's top-up stages with literal values: every check of a load request, every
redelivery answered once, every refusal reversing once (mutation testing showed the gaps)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import decide as platform
from agents.platform import transit as platform_transit
from agents.providers.bank_a import adapter as bank_a
from agents.providers.transit import adapter as operator
from bench.sim import World
from schemas.payments import ReversalRequested
from schemas.transit import TransitLoadAuthorized, TransitLoadConfirmed
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp

LATER = NOW + timedelta(seconds=7)


@pytest.fixture
def world() -> World:
    return World.build([bank_a, operator], [T], NOW)


def forward(world: World, top: TopUp, ev):  # type: ignore[no-untyped-def]
    return platform_transit.request_load(ev, pending=top.pending, routes=world.routes,
                                         hsm=world.platform, received_at=LATER)


def test_a_load_request_is_forwarded_sealed_by_the_platform_at_its_arrival(world: World
                                                                           ) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()
    new, out = forward(world, top, req)
    ((role, key, fwd),) = out.events
    assert (role, key) == ("provider:transit", req.card_token)
    assert (fwd.producer, fwd.occurred_at, fwd.event_id) == ("platform", LATER, req.event_id)
    world.platform.verifier.verify_seal(fwd.seal, fwd.canonical_bytes())
    assert (new.load_stage, new.load_request_id, new.operator_id, new.card_token) == (
        "requested", req.event_id, "transit", req.card_token)
    again, out2 = platform_transit.request_load(req, pending=new, routes=world.routes,
                                                hsm=world.platform, received_at=LATER)
    assert again == new and out2.events == []  # redelivered: already forwarded
    other = top.terminal.mac_event(req.model_copy(update={"event_id": "load-other-0001"}))
    with pytest.raises(platform.Rejected, match="is requested, not waiting for a load"):
        platform_transit.request_load(other, pending=new, routes=world.routes,
                                      hsm=world.platform, received_at=LATER)


@pytest.mark.parametrize(("change", "message"), [
    ({"approved": False}, "amount or approval does not match"),
    ({"amount": 4_999}, "amount or approval does not match"),
    ({"pan_token": "tok_" + "z" * 43}, "not funded by the payment's card"),
    ({"purpose": "purchase"}, "no top-up payment"),
    ({"terminal_id": "T-0009"}, "belongs to another terminal"),
])
def test_a_load_request_must_fit_its_funding_payment(world: World, change: dict[str, object],
                                                     message: str) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()
    if "amount" in change:
        change = {"amount": top.pending.amount.model_copy(update={"amount": change["amount"]})}
    top.pending = top.pending.model_copy(update=change)
    with pytest.raises(platform.Rejected, match=message):
        forward(world, top, req)


@pytest.mark.parametrize(("route_change", "message"), [
    ("missing", "no transit operator transit for"),
    ("bank", "no transit operator transit for"),
    ("aid", "no transit operator transit for"),
])
def test_a_load_goes_only_to_a_transit_operator_of_the_card_s_aid(
        world: World, route_change: str, message: str) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()
    route = world.routes["transit"]
    routes = dict(world.routes)
    if route_change == "missing":
        del routes["transit"]
    elif route_change == "bank":
        routes["transit"] = route.model_copy(update={"kind": "bank"})
    else:
        routes["transit"] = route.model_copy(update={"transit_aids": ("A000000632010199",)})
    with pytest.raises(platform.Rejected, match=message):
        platform_transit.request_load(req, pending=top.pending, routes=routes,
                                      hsm=world.platform, received_at=LATER)


def authorized(world: World) -> tuple[TopUp, TransitLoadAuthorized]:
    top = TopUp(world)
    top.pay()
    auth = top.operator(top.forward(top.load_request()))
    return top, auth


def answer(world: World, top: TopUp, ev):  # type: ignore[no-untyped-def]
    return platform_transit.operator_answer(ev, pending=top.pending,
                                            route=world.routes["transit"], hsm=world.platform)


def test_mac2_goes_to_the_terminal_once(world: World) -> None:
    top, auth = authorized(world)
    new, out = answer(world, top, auth)
    ((role, key, ev),) = out.events
    assert (role, key, new.load_stage) == ("terminal", T, "authorized")
    world.platform.verifier.verify_seal(ev.seal, ev.canonical_bytes())
    top.pending = new
    assert answer(world, top, auth) == (new, platform.Out())


def test_an_answer_for_no_load_in_progress_is_refused(world: World) -> None:
    _top, auth = authorized(world)
    with pytest.raises(platform.Rejected, match="answers no top-up in progress"):
        platform_transit.operator_answer(auth, pending=None, route=world.routes["transit"],
                                         hsm=world.platform)


def confirmed(top: TopUp, outcome: str, auth: TransitLoadAuthorized) -> TransitLoadConfirmed:
    ev = TransitLoadConfirmed(
        event_id=f"c-{outcome}-00001", correlation_id=top.pending.payment_id, occurred_at=LATER,
        producer="provider:transit", operator_id="transit",
        request_event_id=auth.request_event_id, card_token=auth.card_token,
        confirmed=outcome == "booked", outcome=outcome, balance=6_000)  # type: ignore[arg-type]
    return top.op_hsm.sign_event(ev)


@pytest.mark.parametrize(("outcome", "stage"), [("booked", "confirmed"),
                                                ("unresolved", "reconcile")])
def test_a_final_answer_is_forwarded_once(world: World, outcome: str, stage: str) -> None:
    top, auth = authorized(world)
    top.pending, _ = answer(world, top, auth)
    ev = confirmed(top, outcome, auth)
    new, out = answer(world, top, ev)
    assert new.load_stage == stage and [(r, k) for r, k, _ in out.events] == [("terminal", T)]
    top.pending = new
    assert answer(world, top, ev) == (new, platform.Out())


def test_a_void_reverses_once_and_is_still_told_to_the_terminal(world: World) -> None:
    top, auth = authorized(world)
    top.pending, _ = answer(world, top, auth)
    ev = confirmed(top, "voided", auth)
    new, out = answer(world, top, ev)
    revs = [e for _r, _k, e in out.events if isinstance(e, ReversalRequested)]
    assert len(revs) == 1 and revs[0].occurred_at == LATER and new.load_stage == "failed"
    assert [(r, k) for r, k, e in out.events if not isinstance(e, ReversalRequested)] == [
        ("terminal", T)]
    top.pending = new
    again, out2 = answer(world, top, ev)
    assert again == new and [(r, k) for r, k, _ in out2.events] == [("terminal", T)]


def test_a_void_after_a_reversal_elsewhere_still_fails_the_load(world: World) -> None:
    top, auth = authorized(world)
    top.pending, _ = answer(world, top, auth)
    top.pending = top.pending.model_copy(update={"load_stage": "applied", "reversed": True})
    new, out = answer(world, top, confirmed(top, "voided", auth))
    assert new.load_stage == "failed"
    assert not any(isinstance(e, ReversalRequested) for _r, _k, e in out.events)


def test_a_card_report_must_match_the_load_request(world: World) -> None:
    from tests.agents.test_trust_transit import aborted

    top, auth = authorized(world)
    top.pending, _ = answer(world, top, auth)
    wrong = aborted(top, auth.model_copy(update={"request_event_id": "other-request-1"}))
    with pytest.raises(platform.Rejected, match="matches no load request"):
        platform_transit.card_report(wrong, pending=top.pending, hsm=world.platform,
                                     received_at=LATER)
    no_operator = top.pending.model_copy(update={"operator_id": None})
    with pytest.raises(platform.Rejected, match="matches no load request"):
        platform_transit.card_report(aborted(top, auth), pending=no_operator,
                                     hsm=world.platform, received_at=LATER)


@pytest.mark.parametrize("stage", ["applied", "confirmed", "failed"])
def test_a_card_report_after_the_load_settled_is_a_redelivery(world: World, stage: str) -> None:
    from tests.agents.test_trust_transit import aborted

    top, auth = authorized(world)
    top.pending, _ = answer(world, top, auth)
    settled = top.pending.model_copy(update={"load_stage": stage})
    assert platform_transit.card_report(aborted(top, auth), pending=settled,
                                        hsm=world.platform, received_at=LATER) == (
        settled, platform.Out())
