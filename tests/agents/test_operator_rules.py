"""The transit operator's rules with literal values: MAC2 only for the platform's request,
the purse limit (inclusive), one answer per request, ids derived from the request."""

from __future__ import annotations

import hashlib

import pytest

from agents.providers.bank_a import adapter as bank_a
from agents.providers.transit import MAX_BALANCE, Purse
from agents.providers.transit import adapter as operator
from bench.sim import World
from schemas.transit import TransitLoadAuthorized, TransitLoadConfirmed
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp


@pytest.fixture
def world() -> World:
    return World.build([bank_a, operator], [T], NOW)


def test_mac2_only_for_a_request_the_platform_sealed(world: World) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()  # the terminal's MAC, not the platform's seal
    ans = operator.authorize_load(req, None, top.op)
    assert isinstance(ans.event, TransitLoadConfirmed)
    assert (ans.event.outcome, ans.event.request_event_id) == ("voided", req.event_id)
    assert (ans.event.reason or "").startswith("not from the platform: ")
    assert ans.purse.done[req.event_id] == ans.event.model_dump(mode="json")
    assert ans.purse.balance == req.balance_before and ans.purse.authorized == {}
    expected = hashlib.sha256(f"transit:refused:{req.event_id}".encode()).hexdigest()[:32]
    assert ans.event.event_id == expected
    again = operator.authorize_load(req, ans.purse, top.op)  # the same request again
    assert again.event == ans.event and again.purse == ans.purse


@pytest.mark.parametrize(("balance", "ok"), [(MAX_BALANCE - 5_000, True),
                                             (MAX_BALANCE - 4_999, False)])
def test_the_purse_limit_is_inclusive(world: World, balance: int, ok: bool) -> None:
    assert MAX_BALANCE == 100_000
    top = TopUp(world, amount=5_000, purse_balance=balance)
    top.pay()
    fwd = top.forward(top.load_request())
    ans = operator.authorize_load(fwd, None, top.op)
    if ok:
        assert isinstance(ans.event, TransitLoadAuthorized)
        assert ans.event.new_balance == MAX_BALANCE
        assert ans.purse.authorized[fwd.event_id].new_balance == MAX_BALANCE
    else:
        assert isinstance(ans.event, TransitLoadConfirmed)
        assert (ans.event.reason, ans.event.balance) == ("purse limit exceeded", balance)
        assert fwd.event_id in ans.purse.done


def test_an_authorized_request_again_gets_the_same_mac2(world: World) -> None:
    top = TopUp(world)
    top.pay()
    fwd = top.forward(top.load_request())
    first = operator.authorize_load(fwd, Purse(card_token=fwd.card_token, balance=1_000),
                                    top.op)
    again = operator.authorize_load(fwd, first.purse, top.op)
    assert again.event == first.event and again.purse == first.purse
    assert isinstance(first.event, TransitLoadAuthorized) and first.event.mac2


def test_a_confirmation_for_no_authorized_load_voids(world: World) -> None:
    from tests.agents.test_trust_transit import authorized

    top, auth = authorized(world)
    from schemas.transit import TransitLoadApplied

    applied = TransitLoadApplied(
        event_id="applied-00001", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer="platform", terminal_id=T, operator_id="transit",
        request_event_id="never-authorized", funding_pan_token=top.pending.pan_token,
        card_token=auth.card_token, amount=auth.amount, new_balance=auth.new_balance,
        load_counter=auth.load_counter, tac="00000000")
    ans = operator.confirm_load(world.platform.sign_event(applied), top.purse, top.op)
    assert (ans.event.outcome, ans.event.reason) == ("voided", "no authorized load to confirm")
