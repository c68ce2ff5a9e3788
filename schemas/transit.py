"""Transit top-up events: load requested, authorized by the operator, applied on the card (or
aborted), confirmed by the operator.

Flow: the terminal's ``TransitLoadRequested`` (card's MAC1 over the load) -> platform, which
forwards it (re-sealed) to ``cardbus.provider.<operator>.requests`` once the funding payment is
approved -> operator answers ``TransitLoadAuthorized`` with MAC2 -> the terminal writes the load
to the card and reports the card's TAC in ``TransitLoadApplied`` -> operator checks the TAC and
answers ``TransitLoadConfirmed``. The correlation id is the funding payment's id.

Once the operator has given MAC2 the card may hold the value, so a terminal's word that the card
did not take the load is not enough to reverse the funding payment: a ``TransitLoadAborted``
after MAC2 carries the card's own evidence (``PurseProbe``: a fresh INITIALIZE FOR LOAD whose
MAC1 covers a challenge only the operator's MAC2 made known), and the operator's
``TransitLoadConfirmed.outcome`` says what follows: ``booked`` (loaded), ``voided`` (nothing was
loaded: the payment is reversed) or ``unresolved`` (neither can be proven: reconciliation).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Event, Money, PanToken, ProviderId, TerminalId, UtcDatetime
from schemas.upcast import Raw, upcaster
from schemas.values import Aid, Amount, Counter, Mac4, Text, hex_bytes

CardToken = PanToken
"""A transit card on the bus: the operator's keyed token of the card, personalised onto the card
at issue (v2). The card's number stays on the card (v1 carried it in clear as ``card_serial``,
a Luhn-valid 16-digit number any PAN scanner flags)."""

TRANSIT_EVENTS = ("TransitLoadRequested", "TransitLoadAuthorized", "TransitLoadApplied",
                  "TransitLoadAborted", "TransitLoadConfirmed")


class TransitLoadRequested(Event):
    """A top-up of a transit card, paid by the payment ``funding_payment_id``."""

    SEALED_BY: ClassVar[str] = "terminal MAC key, then platform identity key when forwarded"

    type: Literal["TransitLoadRequested"] = "TransitLoadRequested"
    schema_version: Literal[2] = 2

    terminal_id: TerminalId
    operator_id: ProviderId
    funding_payment_id: str
    funding_pan_token: PanToken = Field(
        description="token of the paying bank card: the key that keeps the top-up's events in "
                    "the partition of its funding payment")
    aid: Aid
    card_token: CardToken
    amount: Money
    balance_before: Amount
    load_counter: Counter
    card_random: Annotated[str, hex_bytes(4)] = Field(
        description="the card's random number from INITIALIZE FOR LOAD (MAC1 covers it)")
    mac1: Mac4 = Field(description="the card's MAC over the load (INITIALIZE FOR LOAD)")


class TransitLoadAuthorized(Event):
    """The operator accepts MAC1 and answers with MAC2 for the card's LOAD command."""

    SEALED_BY: ClassVar[str] = "operator identity key"

    type: Literal["TransitLoadAuthorized"] = "TransitLoadAuthorized"
    schema_version: Literal[2] = 2

    operator_id: ProviderId
    request_event_id: str
    terminal_id: TerminalId
    card_token: CardToken
    amount: Money
    new_balance: Amount
    load_counter: Counter
    date_time: UtcDatetime = Field(
        description="when the operator authorized the load (to the second): MAC2 and the TAC "
                    "cover it as YYYYMMDDhhmmss (v1 carried that 14-digit form)")
    mac2: Mac4


class TransitLoadApplied(Event):
    """The card took the load: its TAC proves it."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["TransitLoadApplied"] = "TransitLoadApplied"
    schema_version: Literal[2] = 2

    terminal_id: TerminalId
    operator_id: ProviderId
    request_event_id: str
    funding_pan_token: PanToken
    card_token: CardToken
    amount: Money
    new_balance: Amount
    load_counter: Counter
    tac: Mac4


class PurseProbe(BaseModel):
    """The card's answer to an INITIALIZE FOR LOAD made after MAC2 with the challenge terminal
    id (``cardbus.crypto.transit.probe_terminal_id(mac2)``): its balance and online sequence
    number under the card's MAC1. Made after MAC2 was known, and making it voids the pending
    load on the card (a new random), so it proves the card's state after that load's chance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    balance: Amount
    load_counter: Counter
    card_random: Annotated[str, hex_bytes(4)]
    probe_amount: Amount = Field(description="the amount the probe's INITIALIZE FOR LOAD named")
    mac1: Mac4


class TransitLoadAborted(Event):
    """The card did not take the load (removed before CREDIT FOR LOAD, MAC2 refused). Before
    MAC2 the funding payment is reversed; after it only with the card's ``evidence`` as the
    operator checks it (v2: ``evidence``)."""

    SEALED_BY: ClassVar[str] = "terminal MAC key, then platform identity key when forwarded"

    type: Literal["TransitLoadAborted"] = "TransitLoadAborted"
    schema_version: Literal[2] = 2

    terminal_id: TerminalId
    operator_id: ProviderId
    request_event_id: str
    funding_pan_token: PanToken
    card_token: CardToken
    reason: Text
    evidence: PurseProbe | None = None


LoadOutcome = Literal["booked", "voided", "unresolved"]


class TransitLoadConfirmed(Event):
    """The operator's final word on a load: ``booked`` (the card's TAC proved it), ``voided``
    (nothing was or can be loaded: the funding payment is reversed) or ``unresolved`` (MAC2 was
    given and neither a TAC nor the card's evidence settles it: reconciliation, no reversal).
    v2: ``outcome``; ``confirmed`` is ``outcome == "booked"``."""

    SEALED_BY: ClassVar[str] = "operator identity key"

    type: Literal["TransitLoadConfirmed"] = "TransitLoadConfirmed"
    schema_version: Literal[2] = 2

    operator_id: ProviderId
    request_event_id: str
    card_token: CardToken
    confirmed: bool
    outcome: LoadOutcome
    balance: Amount
    reason: Text | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TransitLoadConfirmed:
        if self.confirmed != (self.outcome == "booked"):
            raise ValueError("outcome: confirmed goes with booked and booked with confirmed")
        return self


def _transit_v1_to_v2(raw: Raw) -> Raw:
    """v1 -> v2 of every transit event: the clear ``card_serial`` becomes a reference that does
    not hold the number (its SHA-256: old events stay readable, and no clear card number is
    made from them); the 14-digit load time an ISO 8601 time; an abort carries no card
    evidence; a confirmation's outcome is ``booked`` or ``voided`` (v1 knew those two)."""
    serial = str(raw.pop("card_serial", ""))
    raw["card_token"] = "tok_v1-" + hashlib.sha256(serial.encode()).hexdigest()[:40]
    stamp = raw.get("date_time")
    if isinstance(stamp, str) and len(stamp) == 14 and stamp.isdigit():
        raw["date_time"] = (f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:"
                            f"{stamp[10:12]}:{stamp[12:]}Z")
    if raw.get("type") == "TransitLoadAborted":
        raw.setdefault("evidence", None)
    if raw.get("type") == "TransitLoadConfirmed":
        raw["outcome"] = "booked" if raw.get("confirmed") else "voided"
    raw["schema_version"] = 2
    return raw


for _name in TRANSIT_EVENTS:
    upcaster(_name, 1)(_transit_v1_to_v2)
