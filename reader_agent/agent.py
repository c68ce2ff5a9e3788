"""The reader agent: card taps -> card dialogue -> CardTapped / PaymentRequested on Kafka.

Blocking PC/SC work (the watcher thread, the dialogue) stays off the asyncio loop: the
dialogue runs in a daemon thread held to the card limits (``reader_agent.pcsc.CardLimits``: GET
RESPONSE and re-issue rounds, bytes, the step deadline), and the agent stops waiting for a card
that goes mute mid-APDU (``reader_agent.cardthread``). Whatever a card does ends in a
``TapOutcome`` with ``error`` set ("card not accepted: <error>"), never in an exception. The
terminal's key module (``reader_agent.terminal.Terminal``: its
``TerminalHsm`` and the providers' card-authentication keys) checks the card and seals the
events (``reader_agent.requests.tap_events``); a ``Bus`` (``TerminalSession`` in production)
publishes them and returns the future of the platform's answer. When the answer comes, the
agent finishes the ARPC step (second GENERATE AC with ARC = the response code) while the card
is still there. A failed dialogue never produces a payment request: events are built only from
a complete, verified ``EmvTap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cardbus.crypto.keystore import b64d
from cardbus.emv.data import currency_numeric
from cardbus.errors import CardBusError, CardError, PcscError
from cardbus.logs import bind_correlation, get_logger
from reader_agent.cardthread import MUTE_GRACE_S, in_card_thread, step_timeout
from reader_agent.dialogue import (
    SW_OK,
    Checkout,
    EmvTap,
    apply_script,
    complete_payment,
    run_payment,
)
from reader_agent.pcsc import DEFAULT_LIMITS, CardLimits, CardLink, Context
from reader_agent.requests import Sale
from reader_agent.terminal import Terminal
from schemas.base import Event, Money, header, new_event_id
from schemas.cards import CardTapped
from schemas.cardstatus import IssuerScriptApplied
from schemas.payments import PaymentCompleted, PaymentRequested
from schemas.values import Merchant

log = get_logger("reader_agent.agent")


PinSource = Callable[[str], str]


class Bus(Protocol):
    """Where a terminal's events go (``TerminalSession`` satisfies it)."""

    async def publish_tap(self, tapped: CardTapped) -> None: ...

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]: ...

    async def cancel(self, req: PaymentRequested) -> None: ...

    async def report_script(self, applied: IssuerScriptApplied) -> None: ...


def interactive_pin(masked_pan: str) -> str:
    """Hidden PIN entry on the terminal."""
    return getpass.getpass(f"PIN for {masked_pan}: ")


def scripted_pins(*pins: str) -> PinSource:
    """PINs from a script (tests, demo): the same PIN again once the list runs out."""
    queue = list(pins)

    def _next(_masked: str) -> str:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return _next


@dataclass
class Armed:
    """A checkout waiting for a card."""

    amount: int
    currency: str
    merchant: Merchant
    purpose: str = "purchase"


@dataclass
class TapOutcome:
    """What one card arrival produced (for the CLI, tests and the benchmark)."""

    reader: str
    tap: EmvTap | None = None
    tapped: CardTapped | None = None
    request: PaymentRequested | None = None
    answer: asyncio.Future[Event] | None = field(default=None, repr=False)
    error: str | None = None
    """Why the card was not accepted, written to follow "card not accepted: "."""
    error_code: str | None = None
    connected_at: float = 0.0
    read_at: float = 0.0
    """When the card dialogue ended (the ARQC read), between ``connected_at`` and ``acked_at``."""
    acked_at: float = 0.0


class ReaderAgent:
    """Runs the dialogue for each card and publishes the events."""

    def __init__(self, terminal: Terminal, bus: Bus, *, aids: Mapping[str, str],
                 pin_source: PinSource | None = None,
                 limits: CardLimits = DEFAULT_LIMITS) -> None:
        self.terminal = terminal
        self.bus = bus
        self.aids = dict(aids)
        self.pin_source = pin_source or interactive_pin
        self.limits = limits
        self.armed: Armed | None = None
        self._free: list[Context] = []  # PC/SC contexts not in use (one per dialogue at a time)
        self._free_lock = threading.Lock()
        self.open_links: dict[str, tuple[CardLink, EmvTap, str]] = {}  # + request id

    def arm(self, amount: int, currency: str, merchant: Merchant | None = None,
            purpose: str = "purchase") -> None:
        """Arm a checkout; ``ConfigError`` at once for a currency CardBus does not accept."""
        currency_numeric(currency)
        self.armed = Armed(amount, currency, merchant or self.terminal.merchant, purpose)

    def _take_context(self) -> Context:
        with self._free_lock:
            if self._free:
                return self._free.pop()
        return Context()

    def _give_context(self, ctx: Context) -> None:
        with self._free_lock:
            self._free.append(ctx)

    def _dialogue(self, reader: str, checkout: Checkout
                  ) -> tuple[CardLink, EmvTap, float, float]:
        ctx = self._take_context()
        try:
            try:
                link = ctx.connect(reader, self.limits)
            except PcscError:
                ctx = Context()  # pcscd restarted: a fresh context (the old one is dead)
                link = ctx.connect(reader, self.limits)
            t0 = time.monotonic()
            tap = self._run_payment(link, reader, checkout)
            return link, tap, t0, time.monotonic()
        finally:
            self._give_context(ctx)  # never reached while a mute card holds the dialogue

    def _run_payment(self, link: CardLink, reader: str, checkout: Checkout) -> EmvTap:
        try:
            return run_payment(link, self.aids, checkout, self.terminal.card_auth_public)
        except CardBusError:
            link.disconnect()
            raise
        except Exception as exc:
            # Card bytes that reach a defect of the dialogue are still a card not accepted:
            # said as one, logged as the defect it is.
            link.disconnect()
            log.error("card dialogue defect", reader=reader, error=repr(exc), exc_info=True)
            raise CardError(f"card answer not understood ({type(exc).__name__})") from exc
        except BaseException:
            link.disconnect()
            raise

    async def handle_card(self, reader: str, atr: bytes, armed: Armed | None = None
                          ) -> TapOutcome:
        """The whole tap: dialogue, events, publish. Never raises for card trouble.

        The armed checkout (``armed``, else the agent's) is taken by this tap; a tap whose
        dialogue fails gives it back, so the next card can pay.
        """
        out = TapOutcome(reader)
        if armed is None:
            armed, self.armed = self.armed, None
        currency = armed.currency if armed else "CNY"
        checkout = Checkout(amount=armed.amount if armed else 0,
                            currency_numeric=currency_numeric(currency))
        try:
            link, tap, out.connected_at, out.read_at = await in_card_thread(
                lambda: self._dialogue(reader, checkout),
                timeout=step_timeout(self.limits),
                dispose=lambda late: late[0].disconnect(), name=f"dialogue {reader}")
        except CardBusError as exc:
            out.error = str(exc) if isinstance(exc, CardError) else f"{exc.code}: {exc}"
            out.error_code = exc.code
            log.warning("card dialogue failed", reader=reader, error=str(exc), code=exc.code)
            if armed is not None and self.armed is None:
                self.armed = armed
            return out
        out.tap = tap
        payment_id = new_event_id()
        with bind_correlation(payment_id, reader=reader):
            sale = None
            if armed is not None:
                pin = await asyncio.to_thread(self.pin_source, tap.masked_pan)
                if tap.blocked:  # it cannot pay: a zero-amount check brings the issuer's script
                    log.warning("payment application blocked on the card",
                                masked_pan=tap.masked_pan)
                    sale = Sale(Money(amount=0, currency=armed.currency), armed.merchant, pin)
                else:
                    sale = Sale(Money(amount=armed.amount, currency=armed.currency),
                                armed.merchant, pin, armed.purpose)
            out.tapped, out.request = self.terminal.events(
                tap, reader=reader, atr=atr.hex().upper() or "3B00", now=datetime.now(UTC),
                sale=sale, payment_id=payment_id)
            try:
                if out.request is None:
                    await self.bus.publish_tap(out.tapped)
                else:  # both events in one broker round trip (the publisher groups them)
                    self.open_links[payment_id] = (link, tap, out.request.event_id)
                    _, out.answer = await asyncio.gather(self.bus.publish_tap(out.tapped),
                                                         self.bus.request(out.request))
                log.info("card tapped", provider=tap.provider, masked_pan=tap.masked_pan,
                         atc=tap.atc)
                if out.request is not None:
                    log.info("payment requested", amount=armed.amount if armed else 0,
                             currency=currency)
            except BaseException:
                self.open_links.pop(payment_id, None)
                await self._close(link)
                raise
            if out.request is None:
                await self._close(link)
        out.acked_at = time.monotonic()
        return out

    async def _close(self, link: CardLink) -> None:
        """Disconnect off the loop (a link whose card went mute is left to its thread)."""
        with contextlib.suppress(CardError):
            await in_card_thread(link.disconnect, timeout=MUTE_GRACE_S, name="disconnect")

    async def complete(self, done: PaymentCompleted) -> str:
        """The platform's answer: second GENERATE AC (ARC = the response code) if the card is
        still there, then the issuer's script if the answer carries one."""
        entry = self.open_links.pop(done.correlation_id, None)
        if entry is None:
            return "card gone"
        link, tap, request_id = entry
        try:
            said = await self._second_ac(link, tap, done)
            if done.issuer_script is not None:
                said += "; " + await self._script(link, tap, request_id, done)
            return said
        except CardError as exc:
            log.info("card left before the issuer's answer", error=str(exc))
            return "card removed before completion"
        finally:
            await self._close(link)

    async def _second_ac(self, link: CardLink, tap: EmvTap, done: PaymentCompleted) -> str:
        if tap.declined_by_card:  # its AAC ended the transaction: no second GENERATE AC
            return "card blocked (AAC)" if tap.blocked else "card declined (AAC)"
        if done.arpc is None:
            return "approved (no ARPC)" if done.approved else "declined"
        arc, arpc = done.response_code.encode("ascii"), bytes.fromhex(done.arpc)
        result = await in_card_thread(lambda: complete_payment(link, tap, arc, arpc),
                                      timeout=step_timeout(self.limits),
                                      name="second generate AC")
        if result.cid == 0x40:
            return "approved, card accepted (TC)"
        return "card closed the payment (AAC)" + (
            ", issuer authenticated" if result.issuer_authenticated
            else ", issuer authentication FAILED")

    async def _script(self, link: CardLink, tap: EmvTap, request_id: str,
                      done: PaymentCompleted) -> str:
        """The issuer's script to the card (after its GENERATE AC), and the card's status word
        reported back (``IssuerScriptApplied``)."""
        script = done.issuer_script
        assert script is not None
        command = b64d(script.command)
        sw = await in_card_thread(lambda: apply_script(link, command),
                                  timeout=step_timeout(self.limits), name="issuer script")
        tid = self.terminal.terminal_id
        await self.bus.report_script(self.terminal.hsm.mac_event(IssuerScriptApplied(
            **header(f"terminal:{tid}", done.correlation_id), terminal_id=tid,
            pan_token=tap.pan_token, request_event_id=request_id, script=script.kind, sw=sw)))
        log.info("issuer script", script=script.kind, sw=f"{sw:04X}")
        verdict = "applied" if sw == SW_OK else "refused by the card"
        return f"issuer script {script.kind.upper()} {verdict} ({sw:04X})"

    async def release(self, payment_id: str) -> None:
        """Forget an open payment without completing it (timeout, shutdown)."""
        entry = self.open_links.pop(payment_id, None)
        if entry is not None:
            await self._close(entry[0])
