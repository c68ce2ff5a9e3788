"""Lost and stolen cards through the handlers, without a broker: the issuer's ``CardBlocked``,
the bank's 41/43 with APPLICATION BLOCK, the card (a real multi-application applet) blocking
itself, the terminal's report forwarded to the issuer, a blocked card's zero-amount check, the
issuer's ``CardUnblocked`` and APPLICATION UNBLOCK until the card applied it; and the audit's
re-derivation of every one of those decisions, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.platform.decide import Rejected
from agents.providers.bank_a import adapter as bank_a
from agents.providers.base import IssuedCard, card_issued_event
from agents.providers.state import CardLedger
from audit.rederive import ProviderReplayer
from cardbus.crypto.keystore import b64d
from cardbus.errors import CryptoError
from cardbus.response_codes import APPROVED, LOST_CARD, STOLEN_CARD
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import (
    AppletLink,
    Checkout,
    EmvTap,
    apply_script,
    complete_payment,
    run_payment,
)
from reader_agent.requests import Sale, tap_events
from schemas.base import Event, Money, header
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptApplied
from schemas.payments import AuthorizationDecided, PaymentCompleted, PaymentRequested
from streams import codec
from streams.topics import PROVIDER_RESULTS, TERMINAL_RESULTS, provider_requests_topic
from tests.agents.conftest import NOW
from tests.agents.harness import MERCHANT, Network, only, rec

T = "T-0001"
BANK = "bank-a"


class Till:
    """A terminal with one card in its reader, over the handlers; every event the bank's topic
    received is kept (``inbox``) for the re-derivation."""

    def __init__(self, net: Network, home: Path) -> None:
        self.net = net
        self.bank = net.providers[BANK]
        self.card: IssuedCard = bank_a.issue_card(self.bank.hsm, pin="1234",
                                                  opening_balance=50_000)
        self.applet = applet_for(self.card.profile, home, CardState(None, atc=0))
        self.inbox: list[Event] = []  # what the bank's topic received, in order
        self.decisions: list[AuthorizationDecided] = []  # what the bank answered
        net.terminals[T].trust_card_ca(self.bank.hsm.card_ca_verifier)

    async def to_bank(self, items: list[tuple[str, str | None, Event]]) -> None:
        for topic, _key, ev in items:
            if topic == self.bank.topic:
                self.inbox.append(ev)
                await self.bank.on_request(rec(ev, topic=topic))

    async def issuer(self, ev: Event) -> None:
        await self.to_bank([(self.bank.topic, None, self.bank.hsm.sign_event(ev))])

    def tap(self, amount: int) -> tuple[PaymentRequested, EmvTap, AppletLink]:
        link = AppletLink(self.applet)
        tap = run_payment(link, {self.bank.adapter.aid: BANK}, Checkout(amount=amount, when=NOW),
                          lambda _p: self.bank.hsm.card_ca_verifier.public_bytes())
        money = Money(amount=0 if tap.blocked else amount, currency="CNY")
        _, req = tap_events(self.net.terminals[T], tap, reader="r", atr="3B00", now=NOW,
                            sale=Sale(money, MERCHANT, "1234"))
        assert req is not None
        return req, tap, link

    async def pay(self, amount: int) -> tuple[PaymentCompleted, EmvTap, str]:
        """A tap, the platform and the bank, then what the terminal does with the answer:
        second GENERATE AC (unless the card's own AAC ended it), the script, the report."""
        req, tap, link = self.tap(amount)
        net = self.net
        await net.platform.on_request(rec(req))
        await self.to_bank(net.sent.take())
        decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
        self.decisions.append(decision)
        await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
        done = only(net.sent.on(TERMINAL_RESULTS.name), PaymentCompleted)
        net.sent.take()
        card_says = "card declined it itself (AAC)" if tap.declined_by_card else "TC" if (
            complete_payment(link, tap, done.response_code.encode(), bytes.fromhex(done.arpc))
            .cid == 0x40) else "AAC"
        if done.issuer_script is not None:
            sw = apply_script(link, b64d(done.issuer_script.command))
            card_says += f"; {done.issuer_script.kind} {sw:04X}"
            applied = net.terminals[T].mac_event(IssuerScriptApplied(
                **header(f"terminal:{T}", req.correlation_id, NOW), terminal_id=T,
                pan_token=tap.pan_token, request_event_id=req.event_id,
                script=done.issuer_script.kind, sw=sw))
            await net.platform.on_request(rec(applied))
            await self.to_bank(net.sent.take())
        return done, tap, card_says

    def ledger(self) -> CardLedger:
        return CardLedger.model_validate(self.bank.t.ledger[self.card.card.pan_token])


@pytest.fixture
async def till(tmp_path: Path) -> Till:
    net = Network(NOW)
    await net.join(bank_a)
    await net.enroll(T)
    till = Till(net, tmp_path)
    await till.to_bank([(till.bank.topic, None,
                         card_issued_event(till.card, till.bank.hsm, NOW))])
    net.sent.take()
    return till


def _blocked(till: Till, reason: str = "lost") -> CardBlocked:
    c = till.card.card
    return CardBlocked(**header(f"provider:{BANK}", c.pan_token[:64], NOW), provider_id=BANK,
                       pan_token=c.pan_token, masked_pan=c.masked_pan,
                       reason=reason)  # type: ignore[arg-type]


def _unblocked(till: Till) -> CardUnblocked:
    c = till.card.card
    return CardUnblocked(**header(f"provider:{BANK}", c.pan_token[:64], NOW), provider_id=BANK,
                         pan_token=c.pan_token, masked_pan=c.masked_pan)


async def test_a_lost_card_is_declined_41_blocked_on_the_card_then_unblocked(till: Till
                                                                             ) -> None:
    done, tap, says = await till.pay(1_000)
    assert done.response_code == APPROVED and says == "TC" and done.issuer_script is None

    await till.issuer(_blocked(till))
    done, tap, says = await till.pay(2_000)
    assert done.response_code == LOST_CARD and not done.approved and done.arpc is not None
    assert done.issuer_script is not None and done.issuer_script.kind == "block"
    assert not tap.blocked and says == "AAC; block 9000"  # blocked on the card now
    assert till.ledger().account.available == 50_000 - 1_000

    # the next tap: the application answers '6283'; its zero-amount check brings 41 again
    done, tap, says = await till.pay(3_000)
    assert tap.blocked and done.amount.amount == 0 and done.response_code == LOST_CARD
    assert says == "card declined it itself (AAC); block 9000"

    await till.issuer(_unblocked(till))
    assert till.ledger().card.reported is None and till.ledger().card.unblock_pending
    done, tap, says = await till.pay(4_000)  # still blocked on the card: the check carries it
    assert tap.blocked and done.response_code == APPROVED and done.amount.amount == 0
    assert done.issuer_script is not None and done.issuer_script.kind == "unblock"
    assert says.endswith("unblock 9000")
    assert not till.ledger().card.unblock_pending  # the card's '9000' reached the issuer

    done, tap, says = await till.pay(4_000)
    assert not tap.blocked and done.approved and says == "TC" and done.issuer_script is None
    assert till.ledger().account.available == 50_000 - 1_000 - 4_000

    # the audit re-derives every decision from the bank's topic, scripts included
    replay = ProviderReplayer(till.bank.adapter, till.bank.hsm, till.net.platform_hsm.verifier,
                              0)
    derived = [out for ev in till.inbox for _topic, out in replay.apply(ev)]
    assert replay.rejected == 0 and not replay.seal_failures
    assert [codec.encode(d) for d in derived if isinstance(d, AuthorizationDecided)] == [
        codec.encode(d) for d in till.decisions]
    assert [d.response_code for d in till.decisions] == ["00", "41", "41", "00", "00"]


async def test_a_stolen_card_is_declined_43(till: Till) -> None:
    await till.issuer(_blocked(till, "stolen"))
    done, _tap, says = await till.pay(500)
    assert done.response_code == STOLEN_CARD and says.endswith("block 9000")


async def test_card_status_events_need_the_issuers_own_seal(till: Till) -> None:
    ev = _blocked(till)
    with pytest.raises(CryptoError):
        await till.bank.on_request(rec(ev, topic=provider_requests_topic(BANK)))
    assert till.ledger().card.reported is None


async def test_a_script_report_must_answer_a_payment_of_its_terminal(till: Till) -> None:
    await till.issuer(_blocked(till))
    req, tap, _link = till.tap(700)
    applied = till.net.terminals[T].mac_event(IssuerScriptApplied(
        **header(f"terminal:{T}", req.correlation_id, NOW), terminal_id=T,
        pan_token=tap.pan_token, request_event_id=req.event_id, script="unblock", sw=0x9000))
    with pytest.raises(Rejected, match="answers no payment"):  # never requested here
        await till.net.platform.on_request(rec(applied))
    forged = applied.model_copy(update={"sw": 0x6988})  # its MAC no longer covers it
    with pytest.raises(Rejected, match="terminal MAC"):
        await till.net.platform.on_request(rec(forged))
