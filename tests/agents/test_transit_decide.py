"""Transit top-up through the pure platform and operator decisions, with the real card applets
(bank EMV card and transit e-purse) driven in process."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import decide as platform
from agents.platform import transit as platform_transit
from agents.providers.bank_a import adapter as bank_a
from agents.providers.issuer import HsmIssuer
from agents.providers.state import ChainHead, OpenBatch
from agents.providers.transit import HsmOperator, Purse
from agents.providers.transit import adapter as operator
from bench.sim import World
from cardbus.errors import CardError
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, credit_load, init_load, read_purse
from schemas.payments import ReversalRequested
from schemas.transit import (
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)
from tests.agents.conftest import NOW

T = "T-0001"


class TopUp:
    """One top-up driven step by step: bank payment, then the load on the purse."""

    def __init__(self, world: World, amount: int = 5_000, purse_balance: int = 1_000) -> None:
        self.world = world
        self.amount = amount
        self.card = world.issue("bank-a", balance=100_000)
        self.op_hsm = world.providers["transit"]
        self.purse_profile = operator.issue_transit_card(self.op_hsm, balance=purse_balance)
        self.purse_state = CardState(None, balance=purse_balance, online_seq=0)
        self.link = AppletLink(applet_for(self.purse_profile, state=self.purse_state))
        self.issuer = HsmIssuer(world.providers["bank-a"], world.platform.verifier)
        self.op = HsmOperator(self.op_hsm, HsmIssuer(self.op_hsm, world.platform.verifier))
        self.purse: Purse | None = None
        self.terminal = world.terminals[T]

    def pay(self) -> platform.Pending:
        req = self.world.pay(T, self.card, amount=self.amount, when=NOW, purpose="transit_load")
        pending, out = platform.request_payment(
            req, received_at=NOW, terminal=self.world.terminal_records[T],
            routes=self.world.routes, hsm=self.world.platform)
        ((_, _, auth),) = out.events
        decided = bank_a.authorize(auth, card=self.card.card, account=self.card.account,  # type: ignore[arg-type]
                                   chain=ChainHead(), batch=OpenBatch(), processed=None,
                                   crypto=self.issuer).decision
        assert decided.approved
        pending, out = platform.take_decision(decided, pending=pending,
                                              route=self.world.routes["bank-a"],
                                              hsm=self.world.platform)
        assert pending is not None and pending.load_stage == "await_load"
        self.pending = pending
        return pending

    def load_request(self) -> TransitLoadRequested:
        purse = read_purse(self.link, self.purse_profile.aid)
        init = init_load(self.link, self.amount, T)
        ev = TransitLoadRequested(
            event_id="load-" + self.pending.payment_id[:20], correlation_id=self.pending.payment_id,
            occurred_at=NOW, producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
            funding_payment_id=self.pending.payment_id, funding_pan_token=self.pending.pan_token,
            aid=self.purse_profile.aid, card_token=purse.card_token,
            amount=self.pending.amount, balance_before=init.balance,
            load_counter=init.online_seq, card_random=init.random.hex().upper(),
            mac1=init.mac1.hex().upper())
        return self.terminal.mac_event(ev)

    def forward(self, ev: TransitLoadRequested) -> TransitLoadRequested:
        self.pending, out = platform_transit.request_load(
            ev, pending=self.pending, routes=self.world.routes, hsm=self.world.platform,
            received_at=NOW)
        ((role, key, forwarded),) = out.events
        assert role == "provider:transit" and key == ev.card_token
        assert isinstance(forwarded, TransitLoadRequested)
        return forwarded

    def operator(self, ev):  # type: ignore[no-untyped-def]
        if isinstance(ev, TransitLoadRequested):
            answer = operator.authorize_load(ev, self.purse, self.op)
        elif isinstance(ev, TransitLoadApplied):
            answer = operator.confirm_load(ev, self.purse, self.op)
        else:
            answer = operator.abort_load(ev, self.purse, self.op)
        self.purse = answer.purse
        return answer.event

    def back(self, ev):  # type: ignore[no-untyped-def]
        self.pending, out = platform_transit.operator_answer(
            ev, pending=self.pending, route=self.world.routes["transit"], hsm=self.world.platform)
        return out.events


@pytest.fixture
def world() -> World:
    return World.build([bank_a, operator], [T], NOW)


def test_top_up_loads_the_card_and_is_confirmed(world: World) -> None:
    top = TopUp(world)
    top.pay()
    auth = top.operator(top.forward(top.load_request()))
    assert isinstance(auth, TransitLoadAuthorized)
    ((role, _, to_terminal),) = top.back(auth)
    assert role == "terminal" and isinstance(to_terminal, TransitLoadAuthorized)
    tac = credit_load(top.link, to_terminal.date_time, bytes.fromhex(to_terminal.mac2))
    applied = top.terminal.mac_event(TransitLoadApplied(
        event_id="applied-0001", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
        request_event_id=to_terminal.request_event_id, funding_pan_token=top.pending.pan_token,
        card_token=to_terminal.card_token, amount=to_terminal.amount,
        new_balance=to_terminal.new_balance, load_counter=to_terminal.load_counter,
        tac=tac.hex().upper()))
    top.pending, out = platform_transit.card_report(applied, pending=top.pending,
                                                    hsm=world.platform, received_at=NOW)
    ((_, _, forwarded),) = out.events
    confirmed = top.operator(forwarded)
    assert isinstance(confirmed, TransitLoadConfirmed) and confirmed.confirmed
    top.back(confirmed)
    assert top.pending.load_stage == "confirmed" and not top.pending.reversed
    assert read_purse(top.link, top.purse_profile.aid).balance == 1_000 + 5_000
    assert top.purse is not None and top.purse.balance == 6_000 and top.purse.loads == 1
    # the same proof again books nothing twice
    again = top.operator(forwarded)
    assert again.model_dump_json() == confirmed.model_dump_json() and top.purse.loads == 1


def test_redelivered_load_command_does_not_credit_twice(world: World) -> None:
    top = TopUp(world)
    top.pay()
    auth = top.operator(top.forward(top.load_request()))
    credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))
    with pytest.raises(CardError):  # the card has no load pending any more
        credit_load(top.link, auth.date_time, bytes.fromhex(auth.mac2))
    assert read_purse(top.link, top.purse_profile.aid).balance == 6_000


def test_bad_mac1_is_refused_and_the_payment_reversed(world: World) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()
    forged = top.terminal.mac_event(req.model_copy(update={"mac1": "00000000"}))
    refusal = top.operator(top.forward(forged))
    assert isinstance(refusal, TransitLoadConfirmed) and not refusal.confirmed
    assert "MAC1" in (refusal.reason or "")
    events = top.back(refusal)
    assert any(isinstance(ev, ReversalRequested) for _, _, ev in events)


def test_no_card_in_time_reverses_the_payment(world: World) -> None:
    top = TopUp(world)
    pending = top.pay()
    same, out = platform.expire(pending, now=pending.deadline - timedelta(seconds=1),
                                hsm=world.platform)
    assert out.events == [] and same == pending
    failed, out = platform.expire(pending, now=pending.deadline, hsm=world.platform)
    kinds = sorted(type(ev).__name__ for _, _, ev in out.events)
    assert kinds == ["ReversalRequested", "TransitLoadConfirmed"]
    assert failed.load_stage == "failed" and failed.reversed


def test_load_with_forged_terminal_mac_is_rejected(world: World) -> None:
    top = TopUp(world)
    top.pay()
    req = top.load_request()
    tampered = req.model_copy(update={"amount": req.amount.model_copy(update={"amount": 99_999})})
    with pytest.raises(platform.Rejected, match="terminal MAC"):
        top.forward(tampered)
