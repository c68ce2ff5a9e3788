"""The reader agent: card taps -> card dialogue -> CardTapped / PaymentRequested on Kafka.

Blocking PC/SC work (the watcher thread, the dialogue) stays off the asyncio loop
(``asyncio.to_thread``); the loop publishes with an idempotent ``acks=all`` producer and
listens to the terminal's results, finishing the ARPC step while the card is still there.
A failed dialogue never produces a payment request: every event is built only from a
complete, verified ``EmvTap``.
"""

from __future__ import annotations

import asyncio
import getpass
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cardbus.crypto.keystore import b64e
from cardbus.crypto.pan import PanCipher
from cardbus.crypto.pin import make_pin_block
from cardbus.errors import CardBusError, CardError, PcscError
from cardbus.logs import bind_correlation, get_logger
from reader_agent.dialogue import Checkout, EmvTap, complete_payment, run_payment
from reader_agent.keystore import TerminalKeys
from reader_agent.pcsc import CardLink, Context
from schemas.base import Money, new_event_id
from schemas.cards import CardRead, CardTapped
from schemas.payments import PaymentRequested
from schemas.values import Merchant

log = get_logger("reader_agent.agent")

CURRENCY_NUMERIC = {"CNY": 156, "USD": 840, "EUR": 978, "HKD": 344, "GBP": 826}

Publish = Callable[[str, bytes, object], Awaitable[None]]
PinSource = Callable[[str], str]


def interactive_pin(masked_pan: str) -> str:
    """Hidden PIN entry on the terminal."""
    return getpass.getpass(f"PIN for {masked_pan}: ")


def scripted_pins(*pins: str) -> PinSource:
    """PINs from a script (tests, demo): the same PIN again once the list runs out."""
    queue = list(pins)

    def _next(_masked: str) -> str:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return _next


def pan_key_from_mac_key(mac_key: bytes) -> bytes:
    """The terminal's PAN encryption key, derived from its MAC key (HKDF, own label)."""
    return HKDF(hashes.SHA256(), 32, b"cardbus-terminal-pan-enc-v1", b"pan_enc").derive(mac_key)


@dataclass
class Armed:
    """A checkout waiting for a card."""

    amount: int
    currency: str
    merchant: Merchant


@dataclass
class TapOutcome:
    """What one card arrival produced (for the CLI, tests and the benchmark)."""

    reader: str
    tap: EmvTap | None = None
    tapped: CardTapped | None = None
    request: PaymentRequested | None = None
    error: str | None = None
    connected_at: float = 0.0
    acked_at: float = 0.0
    link: CardLink | None = field(default=None, repr=False)


class ReaderAgent:
    """Runs the dialogue for each card and publishes the events."""

    def __init__(self, keys: TerminalKeys, publish: Publish, *, aids: dict[str, str],
                 pin_source: PinSource | None = None, taps_topic: str = "cardbus.taps",
                 requests_topic: str = "cardbus.payment-requests") -> None:
        self.keys = keys
        self.publish = publish
        self.aids = aids
        self.pin_source = pin_source or interactive_pin
        self.taps_topic = taps_topic
        self.requests_topic = requests_topic
        self.armed: Armed | None = None
        self.mac = keys.mac_sealer()
        self.pan_cipher = PanCipher(f"{keys.mac_key_id}.pan", pan_key_from_mac_key(
            bytes.fromhex(keys.mac_key or "")))
        self._local = threading.local()  # one PC/SC context per thread: not thread-safe
        self.open_links: dict[str, tuple[CardLink, EmvTap]] = {}

    def arm(self, amount: int, currency: str, merchant: Merchant | None = None) -> None:
        self.armed = Armed(amount, currency, merchant or self.keys.merchant)

    def _context(self) -> Context:
        ctx: Context | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = Context()
        return ctx

    def _dialogue(self, reader: str, checkout: Checkout) -> tuple[CardLink, EmvTap, float]:
        try:
            link = self._context().connect(reader)
        except PcscError:
            self._local.ctx = None  # pcscd restarted: a fresh context
            link = self._context().connect(reader)
        t0 = time.monotonic()
        try:
            return link, run_payment(link, self.aids, checkout, self.keys.card_auth_public), t0
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
                            currency_numeric=CURRENCY_NUMERIC.get(currency, 156))
        try:
            link, tap, out.connected_at = await asyncio.to_thread(self._dialogue, reader,
                                                                  checkout)
        except CardBusError as exc:
            out.error = f"{exc.code}: {exc}"
            log.warning("card dialogue failed", reader=reader, error=str(exc), code=exc.code)
            if armed is not None and self.armed is None:
                self.armed = armed
            return out
        out.tap, out.link = tap, link
        payment_id = new_event_id()
        with bind_correlation(payment_id, reader=reader):
            card = self._card_read(tap, payment_id)
            now = datetime.now(UTC)
            who = f"terminal:{self.keys.terminal_id}"
            tapped = CardTapped(event_id=new_event_id(), correlation_id=payment_id,
                                occurred_at=now, producer=who, terminal_id=self.keys.terminal_id,
                                reader=reader, atr=atr.hex().upper() or "3B00", card=card)
            out.tapped = tapped.sealed(self.mac.seal(tapped.canonical_bytes()))  # type: ignore[assignment]
            await self.publish(self.taps_topic, self.keys.terminal_id.encode(), out.tapped)
            log.info("card tapped", provider=tap.provider, masked_pan=tap.masked_pan,
                     atc=tap.atc)
            if armed is not None:
                pin = await asyncio.to_thread(self.pin_source, tap.masked_pan)
                block = make_pin_block(self.keys.pin_key_bytes(), pin, tap.pan)
                req = PaymentRequested(
                    event_id=new_event_id(), correlation_id=payment_id, occurred_at=now,
                    producer=who, terminal_id=self.keys.terminal_id, merchant=armed.merchant,
                    amount=Money(amount=armed.amount, currency=armed.currency), card=card,
                    pin_block=block.hex().upper(), pin_key_id=self.keys.pin_key_id)
                out.request = req.sealed(self.mac.seal(req.canonical_bytes()))  # type: ignore[assignment]
                await self.publish(self.requests_topic, tap.pan_token.encode(), out.request)
                log.info("payment requested", amount=armed.amount, currency=armed.currency)
                self.open_links[payment_id] = (link, tap)
            else:
                await asyncio.to_thread(link.disconnect)
                out.link = None
        out.acked_at = time.monotonic()
        return out

    def _card_read(self, tap: EmvTap, payment_id: str) -> CardRead:
        return CardRead(
            aid=tap.aid, masked_pan=tap.masked_pan, pan_token=tap.pan_token,
            pan_encrypted=self.pan_cipher.encrypt(tap.pan, payment_id), psn=tap.psn,
            atc=tap.atc, arqc=tap.arqc.hex().upper(), cdol_data=tap.cdol1_data.hex().upper(),
            unpredictable_number=tap.unpredictable_number.hex().upper(), card_auth="passed",
            card_certificate=b64e(tap.certificate.model_dump_json().encode()))

    async def complete(self, payment_id: str, approved: bool, arpc: bytes | None) -> str:
        """The platform's answer: second GENERATE AC if the card is still there."""
        entry = self.open_links.pop(payment_id, None)
        if entry is None:
            return "card gone"
        link, tap = entry
        try:
            if arpc is None:
                return "approved (no ARPC)" if approved else "declined"
            arc = b"00" if approved else b"05"
            done = await asyncio.to_thread(complete_payment, link, tap, arc, arpc)
            if done.cid == 0x40:
                return "approved, card accepted (TC)"
            return "declined by card (AAC)" + ("" if done.issuer_authenticated
                                               else ", issuer authentication failed")
        except CardError as exc:
            log.info("card left before the issuer's answer", error=str(exc))
            return "card removed before completion"
        finally:
            await asyncio.to_thread(link.disconnect)
