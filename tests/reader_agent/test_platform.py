"""The PC/SC reader agent against the real platform: real pcscd + vpcd cards, the real broker,
the platform and provider workers (``system`` fixture, tests/conftest.py).

A terminal enrolls on the bus, a virtual card issued by bank-a is tapped in a vpcd reader, the
bank approves, and the card accepts the issuer's ARPC (TC). The transit top-up runs the same
``reader_agent.topup`` as the software terminals, over PC/SC: bank card in one reader, e-purse
in another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.providers.base import adapter_for
from cardbus import ceremony
from cardbus.cardprofile import CardProfile
from cardbus.readers import VirtualReader
from cardbus.response_codes import APPROVED
from cards import applet_for
from cards.profile import CardState
from cards.vpcd import VirtualCard
from reader_agent.agent import Armed, ReaderAgent, scripted_pins
from reader_agent.dialogue import Checkout, run_payment
from reader_agent.pcsc import CardLink, Context, wait_present
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from reader_agent.topup import AppliedLoads, TransitTarget, topup
from schemas.base import Money
from schemas.payments import PaymentCompleted
from tests.integration.system import enroll_active

pytestmark = [pytest.mark.pcsc, pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
async def session(system: Any) -> AsyncIterator[TerminalSession]:
    for provider in ("bank-a", "bank-b"):  # a busy machine starts workers slowly
        await _ready(system, provider)
    terminal = Terminal.create(f"R{uuid.uuid4().hex[:7].upper()}", home=system.home)
    sess = TerminalSession(terminal, system.bootstrap)
    await sess.start()
    try:
        await enroll_active(sess)
    except Exception:
        await sess.stop()
        print(system.logs())
        raise
    try:
        yield sess
    finally:
        await sess.stop()


def _insert(profile: CardProfile, reader: VirtualReader, home: Path) -> VirtualCard:
    card = VirtualCard(applet_for(profile, home), reader.port)
    card.insert()
    wait_present(Context(), reader.name)
    return card


def _remove(card: VirtualCard, reader: VirtualReader) -> None:
    card.remove()
    wait_present(Context(), reader.name, present=False)


async def test_tap_on_vpcd_reader_is_approved_and_card_accepts_arpc(
        system: Any, session: TerminalSession, pcscd: list[VirtualReader],
        card_home: Path) -> None:
    issued = await system.issue("bank-a", balance=50_000)
    reader = pcscd[0]
    card = await asyncio.to_thread(_insert, issued.profile, reader, card_home)
    try:
        terminal = session.terminal
        agent = ReaderAgent(terminal, session, aids=terminal.payment_aids(),
                            pin_source=scripted_pins("1234"))
        out = await agent.handle_card(reader.name, card.applet.atr,
                                      Armed(1_234, "CNY", terminal.merchant))
        assert out.error is None and out.answer is not None, out.error
        done = await asyncio.wait_for(out.answer, 30)
        assert isinstance(done, PaymentCompleted)
        assert done.response_code == APPROVED and done.approved, system.logs()
        assert done.provider_id == "bank-a" and done.masked_pan == issued.card.masked_pan
        assert await agent.complete(done) == "approved, card accepted (TC)"
    finally:
        await asyncio.to_thread(_remove, card, reader)


async def _log_says(system: Any, worker: str, *needles: str, timeout: float = 120) -> None:
    """Wait until one line of ``worker``'s log holds every needle."""
    log = system.workers[worker].log
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if any(all(n in line for n in needles) for line in text.splitlines()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{worker} never logged {needles}\n{system.logs()}")


async def _ready(system: Any, provider: str) -> None:
    """``provider``'s worker is running and the platform routes to it."""
    if provider not in system.workers:
        system.start_provider(provider)
    await _log_says(system, provider, "Worker ready")
    await _log_says(system, "platform", f'"provider": "{provider}"', "provider keys stored")


def _transit_card(system: Any, balance: int) -> CardProfile:
    adapter = adapter_for("transit")
    return adapter.issue_transit_card(  # type: ignore[attr-defined,no-any-return]
        ceremony.provider_hsm("transit", system.home), balance=balance)


def _pcsc_target(reader: VirtualReader, aid: str) -> TransitTarget:
    def open_link() -> CardLink:
        return Context().connect(reader.name)

    return TransitTarget("transit", aid, open_link, lambda link: link.disconnect())


async def _bank_tap(session: TerminalSession, reader: VirtualReader, amount: int
                    ) -> tuple[Any, CardLink]:
    def run() -> tuple[Any, CardLink]:
        link = Context().connect(reader.name)
        return run_payment(link, session.terminal.payment_aids(), Checkout(amount=amount),
                           session.terminal.card_auth_public), link

    return await asyncio.to_thread(run)


async def test_transit_topup_over_pcsc(system: Any, session: TerminalSession,
                                       pcscd: list[VirtualReader], card_home: Path) -> None:
    await _ready(system, "transit")
    bank = await system.issue("bank-b", balance=80_000)
    purse = _transit_card(system, balance=300)
    bank_card = await asyncio.to_thread(_insert, bank.profile, pcscd[0], card_home)
    transit_card = await asyncio.to_thread(_insert, purse, pcscd[1], card_home)
    try:
        tap, link = await _bank_tap(session, pcscd[0], 2_000)
        try:
            res = await topup(session, tap, Money(amount=2_000, currency="CNY"),
                              _pcsc_target(pcscd[1], purse.aid), pin="1234",
                              applied=AppliedLoads(), bank_link=link, timeout=60)
        finally:
            await asyncio.to_thread(link.disconnect)
        assert res.outcome == "loaded", f"{res.summary()}\n{system.logs()}"
        assert res.balance_before == 300 and res.balance_after == 2_300
        assert CardState.for_profile(purse, card_home)["balance"] == 2_300
    finally:
        await asyncio.to_thread(_remove, bank_card, pcscd[0])
        await asyncio.to_thread(_remove, transit_card, pcscd[1])


class _Hooked:
    """The session as the top-up sees it, with a hook on each published load event (to act
    like the world: a card pulled out, a broker redelivering)."""

    def __init__(self, session: TerminalSession, on_load: Any, *,
                 hook_first: bool = False) -> None:
        self.session = session
        self.terminal = session.terminal
        self.on_load = on_load
        self.hook_first = hook_first  # act on a load event before it is published
        self.authorized: list[Any] = []

    def expect(self, correlation_id: str) -> asyncio.Future[Any]:
        fut = self.session.expect(correlation_id)

        def seen(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None:
                self.authorized.append(f.result())

        fut.add_done_callback(seen)
        return fut

    async def publish_tap(self, tapped: Any) -> None:
        await self.session.publish_tap(tapped)

    async def request(self, req: Any) -> asyncio.Future[Any]:
        return await self.session.request(req)

    async def publish_load(self, event: Any, key: str) -> None:
        if self.hook_first:
            await self.on_load(self, event)
        await self.session.publish_load(event, key)
        if not self.hook_first:
            await self.on_load(self, event)

    async def cancel(self, req: Any) -> None:
        await self.session.cancel(req)


async def _bank_available(system: Any, provider: str, token: str) -> int | None:
    from tests.integration.system import accounts

    acct = (await accounts(system.bootstrap, provider)).get(token)
    return None if acct is None else acct.available


async def test_topup_card_pulled_after_mac1_goes_to_reconciliation(
        system: Any, session: TerminalSession, pcscd: list[VirtualReader],
        card_home: Path) -> None:
    """The card leaves the field once it has given MAC1. After the operator's MAC2 only the
    card can show it was not loaded (issue 22); it is gone, so the terminal's abort carries
    no evidence, the operator answers ``unresolved`` and the payment is not reversed on the
    terminal's word: the top-up goes to reconciliation, the purse untouched."""
    from schemas.transit import TransitLoadRequested

    await _ready(system, "transit")
    bank = await system.issue("bank-b", balance=60_000)
    purse = _transit_card(system, balance=700)
    bank_card = await asyncio.to_thread(_insert, bank.profile, pcscd[0], card_home)
    transit_card = await asyncio.to_thread(_insert, purse, pcscd[1], card_home)
    removed = False

    async def pull_the_card(_bus: _Hooked, event: Any) -> None:
        nonlocal removed
        if isinstance(event, TransitLoadRequested):  # MAC1 given, the card leaves the field
            await asyncio.to_thread(_remove, transit_card, pcscd[1])
            removed = True

    try:
        tap, link = await _bank_tap(session, pcscd[0], 1_500)
        try:
            res = await topup(_Hooked(session, pull_the_card), tap,
                              Money(amount=1_500, currency="CNY"),
                              _pcsc_target(pcscd[1], purse.aid), pin="1234",
                              applied=AppliedLoads(), bank_link=link, timeout=60)
        finally:
            await asyncio.to_thread(link.disconnect)
        assert res.payment is not None and res.payment.approved
        assert res.outcome == "unconfirmed" and "reconciliation" in res.reason, res.summary()
        assert res.aborted is not None and res.aborted.evidence is None
        assert res.applied is None
        assert res.confirmed is not None and res.confirmed.outcome == "unresolved"
        assert CardState.for_profile(purse, card_home)["balance"] == 700  # nothing loaded
        # the hold stays with the bank until reconciliation settles it
        assert await _bank_available(system, "bank-b", bank.card.pan_token) == 58_500
    finally:
        await asyncio.to_thread(_remove, bank_card, pcscd[0])
        if not removed:
            await asyncio.to_thread(_remove, transit_card, pcscd[1])


async def test_topup_redelivered_load_command_credits_once(
        system: Any, session: TerminalSession, pcscd: list[VirtualReader],
        card_home: Path) -> None:
    from schemas.transit import TransitLoadApplied, TransitLoadAuthorized
    from streams.topics import TERMINAL_RESULTS
    from tests.integration.system import publish

    await _ready(system, "transit")
    bank = await system.issue("bank-a", balance=60_000)
    purse = _transit_card(system, balance=100)
    bank_card = await asyncio.to_thread(_insert, bank.profile, pcscd[0], card_home)
    transit_card = await asyncio.to_thread(_insert, purse, pcscd[1], card_home)

    async def redeliver(bus: _Hooked, event: Any) -> None:
        if isinstance(event, TransitLoadApplied):  # the bus hands the load command over again
            auth = next(e for e in bus.authorized if isinstance(e, TransitLoadAuthorized))
            await publish(system.bootstrap, TERMINAL_RESULTS.name,
                          session.terminal.terminal_id, auth)

    try:
        tap, link = await _bank_tap(session, pcscd[0], 900)
        try:
            # the repeat is on the bus before the card's proof: it reaches the terminal before
            # the operator's confirmation can end the top-up
            res = await topup(_Hooked(session, redeliver, hook_first=True), tap,
                              Money(amount=900, currency="CNY"),
                              _pcsc_target(pcscd[1], purse.aid), pin="1234",
                              applied=AppliedLoads(), bank_link=link, timeout=60)
        finally:
            await asyncio.to_thread(link.disconnect)
        assert res.outcome == "loaded", f"{res.summary()}\n{system.logs()}"
        assert res.ignored_repeats >= 1  # the repeat reached the terminal, which ignored it
        assert CardState.for_profile(purse, card_home)["balance"] == 100 + 900
    finally:
        await asyncio.to_thread(_remove, bank_card, pcscd[0])
        await asyncio.to_thread(_remove, transit_card, pcscd[1])
