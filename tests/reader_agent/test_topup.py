"""The terminal side of a transit top-up, without Kafka or PC/SC: real applets (bank card and
e-purse), the terminal's real keys, and an in-process bank + operator built on the providers'
HSMs and the operator's pure decisions. The same ``topup`` runs over PC/SC and the real bus in
``test_platform.py``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from agents.providers import transit as operator
from bench.reader import standalone_terminal
from cardbus.cardprofile import CardProfile
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, EmvTap, read_purse, run_payment
from reader_agent.terminal import Terminal
from reader_agent.topup import AppliedLoads, TransitTarget, topup
from schemas.base import Event, Money
from schemas.cards import CardTapped
from schemas.payments import PaymentCompleted, PaymentRequested
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadRequested,
)
from tests.reader_agent.conftest import aids, issue

AID = "A000000632010105"


class _NoPlatformCheck:
    def verify_platform(self, event: Event) -> None:
        del event


class FakeBus:
    """Bank that approves (or declines) and an operator running its real decisions; answers
    are delivered like ``TerminalSession`` delivers them (futures by correlation id)."""

    def __init__(self, terminal: Terminal, op_hsm: ProviderHsm, *, approve: bool = True,
                 repeat_authorization: int = 0) -> None:
        self.terminal = terminal
        self.crypto = operator.HsmOperator(op_hsm, _NoPlatformCheck())
        self.purse: operator.Purse | None = None
        self.approve = approve
        self.repeat = repeat_authorization
        self.published: list[Event] = []
        self.cancelled: list[PaymentRequested] = []
        self._waiting: dict[str, asyncio.Future[Event]] = {}
        self.unmatched: list[Event] = []

    def expect(self, cid: str) -> asyncio.Future[Event]:
        fut = self._waiting.get(cid)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            for i, ev in enumerate(self.unmatched):
                if ev.correlation_id == cid:
                    fut.set_result(self.unmatched.pop(i))
                    return fut
            self._waiting[cid] = fut
        return fut

    def _deliver(self, ev: Event) -> None:
        fut = self._waiting.pop(ev.correlation_id, None)
        if fut is not None and not fut.done():
            fut.set_result(ev)
        else:
            self.unmatched.append(ev)

    async def publish_tap(self, tapped: CardTapped) -> None:
        self.published.append(tapped)

    async def cancel(self, req: PaymentRequested) -> None:
        self.cancelled.append(req)

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]:
        self.published.append(req)
        fut = self.expect(req.correlation_id)
        code = "00" if self.approve else "51"
        self._deliver(PaymentCompleted(
            event_id=uuid.uuid4().hex, correlation_id=req.correlation_id,
            occurred_at=datetime.now(UTC), producer="platform", terminal_id=req.terminal_id,
            provider_id="bank-a", masked_pan=req.card.masked_pan, amount=req.amount,
            approved=self.approve, response_code=code, message="test bank"))
        return fut

    async def publish_load(self, event: Event, key: str) -> None:
        self.published.append(event)
        if isinstance(event, TransitLoadRequested):
            ans = operator.authorize_load(event, self.purse, self.crypto)
            for _ in range(1 + self.repeat):  # a redelivered load command
                self._deliver(ans.event)
        elif isinstance(event, TransitLoadApplied):
            ans = operator.confirm_load(event, self.purse, self.crypto)
        else:
            assert isinstance(event, TransitLoadAborted)
            ans = operator.abort_load(event, self.purse, self.crypto)
        self.purse = ans.purse
        if not isinstance(event, TransitLoadRequested):
            self._deliver(ans.event)


@pytest.fixture
def world(issuers: dict[str, ProviderHsm]) -> tuple[Terminal, ProviderHsm]:
    term = standalone_terminal({"bank-a": issuers["bank-a"]}, "T-TOPUP",
                               PlatformHsm(memory_keystore()))
    return term, issuers["transit"]


def _bank_tap(term: Terminal, issuers: dict[str, ProviderHsm], amount: int) -> EmvTap:
    card = issue("bank-a", issuers["bank-a"])
    link = AppletLink(applet_for(card, state=CardState(None, atc=0)))
    return run_payment(link, aids(), Checkout(amount=amount), term.card_auth_public)


def _purse(issuers: dict[str, ProviderHsm], balance: int) -> tuple[CardProfile, CardState]:
    return issue("transit", issuers["transit"], balance=balance), CardState(
        None, atc=0, balance=balance, online_seq=0)


def _target(profile: CardProfile, state: CardState) -> TransitTarget:
    return TransitTarget("transit", AID, lambda: AppletLink(applet_for(profile, state=state)))


async def test_topup_loads_the_card_once_even_when_the_load_command_is_redelivered(
        world, issuers) -> None:
    term, op = world
    profile, state = _purse(issuers, 700)
    bus = FakeBus(term, op, repeat_authorization=2)
    applied = AppliedLoads()
    res = await topup(bus, _bank_tap(term, issuers, 1500), Money(amount=1500, currency="CNY"),
                      _target(profile, state), pin="1234", applied=applied)
    assert res.outcome == "loaded", res.reason
    assert res.balance_before == 700 and res.balance_after == 2200
    assert state["balance"] == 2200 and state["online_seq"] == 1  # credited exactly once
    assert res.ignored_repeats >= 1
    req = next(e for e in bus.published if isinstance(e, PaymentRequested))
    assert req.purpose == "transit_load"
    loads = [e for e in bus.published if isinstance(e, TransitLoadRequested)]
    done = [e for e in bus.published if isinstance(e, TransitLoadApplied)]
    assert len(loads) == 1 and len(done) == 1
    assert loads[0].correlation_id == loads[0].funding_payment_id == req.correlation_id
    assert loads[0].funding_pan_token == req.card.pan_token == done[0].funding_pan_token
    assert done[0].request_event_id == loads[0].event_id
    for ev in loads + done:  # the platform can check the terminal's MAC on both
        assert ev.seal is not None and ev.seal.key_id.startswith("tmk:T-TOPUP.v")
    assert loads[0].event_id in applied
    # The card itself refuses a replayed MAC2 (its load counter moved on).
    link = AppletLink(applet_for(profile, state=state))
    assert read_purse(link, AID).balance == 2200


async def test_card_removed_before_the_load_aborts_and_says_why(world, issuers) -> None:
    term, op = world
    profile, state = _purse(issuers, 100)
    links: list[AppletLink] = []

    def open_link() -> AppletLink:
        links.append(AppletLink(applet_for(profile, state=state)))
        return links[-1]

    class Vanishing(FakeBus):
        async def publish_load(self, event: Event, key: str) -> None:
            if isinstance(event, TransitLoadRequested):
                links[-1].applet.power_on()  # the card went away and came back: session lost
            await super().publish_load(event, key)

    bus = Vanishing(term, op)
    res = await topup(bus, _bank_tap(term, issuers, 300), Money(amount=300, currency="CNY"),
                      TransitTarget("transit", AID, open_link), pin="1234",
                      applied=AppliedLoads())
    assert res.outcome == "aborted" and "did not take the load" in res.reason
    assert res.aborted is not None and res.applied is None
    assert res.confirmed is not None and not res.confirmed.confirmed
    assert state["balance"] == 100  # nothing credited
    # the card's evidence went with the abort (issue 22): its probe shows nothing loaded
    evidence = res.aborted.evidence
    assert evidence is not None and (evidence.balance, evidence.load_counter) == (100, 0)
    assert res.confirmed.outcome == "voided"


async def test_declined_payment_never_touches_the_transit_card(world, issuers) -> None:
    term, op = world
    profile, state = _purse(issuers, 100)
    bus = FakeBus(term, op, approve=False)
    res = await topup(bus, _bank_tap(term, issuers, 300), Money(amount=300, currency="CNY"),
                      _target(profile, state), pin="1234", applied=AppliedLoads())
    assert res.outcome == "declined" and "51" in res.reason
    assert not [e for e in bus.published if isinstance(e, TransitLoadRequested)]
    assert state["online_seq"] == 0


def test_applied_loads_persist(tmp_path) -> None:
    path = tmp_path / "applied.json"
    AppliedLoads(path).add("req-1")
    assert "req-1" in AppliedLoads(path) and "req-2" not in AppliedLoads(path)
