"""From a finished card dialogue to the events a terminal publishes (no Kafka, no PC/SC).

``tap_events(hsm, tap, ...)`` turns an ``EmvTap`` into the ``CardTapped`` event and, when a
checkout is armed, the ``PaymentRequested``: the PAN encrypted under the terminal's PAN key and
bound to the payment id, the PIN (if any) as an ISO 9564 format 4 block under the terminal PIN
key, and both events sealed with the terminal MAC key. The reader agent (PC/SC) and the load
generator (applets in process) both call it, so a benchmark pays what a real tap pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cardbus.crypto.hsm import TerminalHsm
from reader_agent.dialogue import EmvTap
from schemas.base import Money, header, new_event_id
from schemas.cards import NO_CVM_PERFORMED, CardRead, CardTapped
from schemas.payments import PaymentRequested
from schemas.values import Merchant


@dataclass(frozen=True)
class Sale:
    """What the client armed: amount, merchant, and the PIN the cardholder entered (if any;
    never in a repr, so never in a log line or a traceback)."""

    amount: Money
    merchant: Merchant
    pin: str | None = field(default=None, repr=False)
    purpose: str = "purchase"


ONLINE_PIN = "420300"  # 9F34: enciphered PIN verified online, if supported; result unknown
"""CVM results when the cardholder entered a PIN (the issuer verifies it)."""


def card_read(hsm: TerminalHsm, tap: EmvTap, payment_id: str, *,
              card_auth: str = "passed", cvm_results: str = NO_CVM_PERFORMED) -> CardRead:
    """The tap's card data as it may travel: masked, tokenized, PAN encrypted."""
    return CardRead(
        aid=tap.aid, masked_pan=tap.masked_pan, pan_token=tap.pan_token,
        pan_encrypted=hsm.encrypt_pan(tap.pan, payment_id), psn=tap.psn, atc=tap.atc,
        arqc=tap.arqc.hex().upper(), cdol_data=tap.arqc_data.hex().upper(),
        unpredictable_number=tap.unpredictable_number.hex().upper(),
        card_auth=card_auth,  # type: ignore[arg-type]
        cvm_results=cvm_results,
        card_certificate=tap.certificate.signature or None)


def tap_events(hsm: TerminalHsm, tap: EmvTap, *, reader: str, atr: str, now: datetime,
               sale: Sale | None, payment_id: str | None = None
               ) -> tuple[CardTapped, PaymentRequested | None]:
    """The MAC-sealed ``CardTapped`` and, with a ``sale``, the ``PaymentRequested``."""
    payment_id = payment_id or new_event_id()
    pin_entered = sale is not None and sale.pin is not None
    card = card_read(hsm, tap, payment_id,
                     cvm_results=ONLINE_PIN if pin_entered else NO_CVM_PERFORMED)
    producer = f"terminal:{hsm.terminal_id}"
    tapped = hsm.mac_event(CardTapped(
        **header(producer, payment_id, now), terminal_id=hsm.terminal_id, reader=reader,
        atr=atr, card=card))
    if sale is None:
        return tapped, None
    pin_key_id, pin_block = None, None
    if sale.pin is not None:
        pin_key_id, block = hsm.pin_block(sale.pin, tap.pan)
        pin_block = block.hex().upper()
    request = hsm.mac_event(PaymentRequested(
        **header(producer, payment_id, now), terminal_id=hsm.terminal_id, merchant=sale.merchant,
        amount=sale.amount, purpose=sale.purpose,  # type: ignore[arg-type]
        card=card, pin_block=pin_block, pin_key_id=pin_key_id))
    return tapped, request
