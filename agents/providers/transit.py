"""The transit operator: a provider like a bank, whose "cards" are e-purses it loads.

Its decisions, pure like a bank's (time and ids from the input events):
- ``authorize_load``: the platform forwards the card's load request (MAC1 over balance, amount,
  terminal, with the card's random and load counter); the operator checks MAC1 and answers MAC2
  for the card's CREDIT FOR LOAD, remembering the authorization;
- ``confirm_load``: the terminal reports the card's TAC (proof of load); the operator checks it
  and books the load;
- ``abort_load``: the terminal says the card did not take the load. Sealed by the platform
  or refused (raises: a dead letter, no answer). Before MAC2 the authorization is voided; after
  MAC2 only the card's evidence (a probe whose MAC1 covers the MAC2 challenge, showing the
  purse's online sequence number not advanced and its balance unchanged) voids it; without it
  the load is ``unresolved``: kept open (a later TAC still books it) and listed by
  reconciliation, never reversed on a terminal's word.
A request seen twice gets the same answer, and a load is booked once. A TAC that does not verify
is ``unresolved`` too (the card may hold the value whatever the terminal sent).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.providers.base import ProviderAdapter
from cardbus.cardprofile import CardProfile, make_pan
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.transit import card_time
from cardbus.errors import CryptoError, MacInvalid
from schemas.base import Event
from schemas.transit import (
    LoadOutcome,
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)

MAX_BALANCE = 100_000  # the purse's limit, in minor units (as the card applet enforces)
_STATE = ConfigDict(frozen=True, extra="forbid")


class Authorized(BaseModel):
    """A load the operator authorized (MAC2 given), waiting for the card's TAC."""

    model_config = _STATE

    request_event_id: str
    amount: int
    currency: str
    load_counter: int
    terminal_id: str
    date_time: datetime
    new_balance: int
    answer: dict[str, object]  # the TransitLoadAuthorized sent (same answer on a repeat)


class Purse(BaseModel):
    """The operator's record of one transit card."""

    model_config = _STATE

    card_token: str
    balance: int = 0  # as last proven by the card (TAC)
    loads: int = 0
    loaded_amount: int = 0
    authorized: dict[str, Authorized] = Field(default_factory=dict)
    done: dict[str, dict[str, object]] = Field(default_factory=dict)  # request id -> answer


class OperatorCrypto(Protocol):
    """What the operator's HSM does for these decisions."""

    provider_id: str

    def verify_platform(self, event: Event) -> None: ...

    def mac2(self, req: TransitLoadRequested, date_time: datetime) -> bytes: ...

    def check_tac(self, applied: TransitLoadApplied, auth: Authorized) -> None: ...

    def check_probe(self, aborted: TransitLoadAborted, auth: Authorized) -> None: ...

    def seal(self, event: Event) -> Event: ...


def _id(kind: str, source: str) -> str:
    return hashlib.sha256(f"transit:{kind}:{source}".encode()).hexdigest()[:32]


def _stamp(event: Event) -> datetime:
    """The load's date and time (to the second: the card's clock field)."""
    return event.occurred_at.replace(microsecond=0)


@dataclass(frozen=True)
class Answer:
    """New purse state and the event to publish."""

    purse: Purse
    event: TransitLoadAuthorized | TransitLoadConfirmed


def _refusal(req: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted,
             purse: Purse, reason: str, crypto: OperatorCrypto,
             outcome: LoadOutcome = "voided") -> TransitLoadConfirmed:
    ev = TransitLoadConfirmed(
        event_id=_id("refused" if outcome == "voided" else outcome, req.event_id),
        correlation_id=req.correlation_id,
        occurred_at=req.occurred_at, producer=f"provider:{crypto.provider_id}",
        operator_id=crypto.provider_id,
        request_event_id=getattr(req, "request_event_id", req.event_id),
        card_token=req.card_token, confirmed=False, outcome=outcome, balance=purse.balance,
        reason=reason)
    sealed = crypto.seal(ev)
    assert isinstance(sealed, TransitLoadConfirmed)
    return sealed


def authorize_load(req: TransitLoadRequested, purse: Purse | None,
                   crypto: OperatorCrypto) -> Answer:
    """Check MAC1 and answer MAC2 (or refuse with the reason)."""
    purse = purse or Purse(card_token=req.card_token, balance=req.balance_before)
    if req.event_id in purse.authorized:  # the same request again: the same answer
        return Answer(purse, TransitLoadAuthorized.model_validate(
            purse.authorized[req.event_id].answer))
    if req.event_id in purse.done:
        return Answer(purse, TransitLoadConfirmed.model_validate(purse.done[req.event_id]))
    try:
        crypto.verify_platform(req)
    except CryptoError as exc:
        return _remember(purse, req.event_id, _refusal(req, purse, f"not from the platform: "
                                                                   f"{exc}", crypto))
    if req.balance_before + req.amount.amount > MAX_BALANCE:
        return _remember(purse, req.event_id,
                         _refusal(req, purse, "purse limit exceeded", crypto))
    date_time = _stamp(req)
    try:
        mac2 = crypto.mac2(req, date_time)
    except CryptoError as exc:
        return _remember(purse, req.event_id, _refusal(req, purse, f"card MAC1: {exc}", crypto))
    new_balance = req.balance_before + req.amount.amount
    answer = TransitLoadAuthorized(
        event_id=_id("authorized", req.event_id), correlation_id=req.correlation_id,
        occurred_at=req.occurred_at, producer=f"provider:{crypto.provider_id}",
        operator_id=crypto.provider_id, request_event_id=req.event_id,
        terminal_id=req.terminal_id, card_token=req.card_token, amount=req.amount,
        new_balance=new_balance, load_counter=req.load_counter, date_time=date_time,
        mac2=mac2.hex().upper())
    sealed = crypto.seal(answer)
    assert isinstance(sealed, TransitLoadAuthorized)
    auth = Authorized(request_event_id=req.event_id, amount=req.amount.amount,
                      currency=req.amount.currency, load_counter=req.load_counter,
                      terminal_id=req.terminal_id, date_time=date_time, new_balance=new_balance,
                      answer=sealed.model_dump(mode="json"))
    return Answer(purse.model_copy(update={"authorized": {**purse.authorized,
                                                          req.event_id: auth}}), sealed)


def _remember(purse: Purse, request_id: str, answer: TransitLoadConfirmed) -> Answer:
    done = {**purse.done, request_id: answer.model_dump(mode="json")}
    return Answer(purse.model_copy(update={"done": done}), answer)


def confirm_load(applied: TransitLoadApplied, purse: Purse | None,
                 crypto: OperatorCrypto) -> Answer:
    """Check the card's TAC and book the load, once."""
    purse = purse or Purse(card_token=applied.card_token)
    rid = applied.request_event_id
    if rid in purse.done:
        return Answer(purse, TransitLoadConfirmed.model_validate(purse.done[rid]))
    auth = purse.authorized.get(rid)
    if auth is None:
        return Answer(purse, _refusal(applied, purse, "no authorized load to confirm", crypto))
    try:
        crypto.verify_platform(applied)
    except CryptoError as exc:
        return Answer(purse, _refusal(applied, purse, f"not from the platform: {exc}", crypto,
                                      "unresolved"))
    try:
        crypto.check_tac(applied, auth)
    except CryptoError as exc:  # MAC2 is out: a bad proof says nothing of the card
        return Answer(purse, _refusal(applied, purse, f"proof of load: {exc}", crypto,
                                      "unresolved"))
    ev = TransitLoadConfirmed(
        event_id=_id("confirmed", rid), correlation_id=applied.correlation_id,
        occurred_at=applied.occurred_at, producer=f"provider:{crypto.provider_id}",
        operator_id=crypto.provider_id, request_event_id=rid, card_token=applied.card_token,
        confirmed=True, outcome="booked", balance=auth.new_balance)
    sealed = crypto.seal(ev)
    assert isinstance(sealed, TransitLoadConfirmed)
    authorized = {k: v for k, v in purse.authorized.items() if k != rid}
    booked = purse.model_copy(update={
        "balance": auth.new_balance, "loads": purse.loads + 1,
        "loaded_amount": purse.loaded_amount + auth.amount, "authorized": authorized,
        "done": {**purse.done, rid: sealed.model_dump(mode="json")}})
    return Answer(booked, sealed)


def abort_load(aborted: TransitLoadAborted, purse: Purse | None,
               crypto: OperatorCrypto) -> Answer:
    """The card did not take the load: void the authorization if nothing can have been loaded
    (no MAC2 given, or the card's evidence shows the load not taken); else ``unresolved``.
    ``CryptoError`` (a dead letter, no answer) unless the platform sealed it."""
    crypto.verify_platform(aborted)
    purse = purse or Purse(card_token=aborted.card_token)
    rid = aborted.request_event_id
    if rid in purse.done:
        return Answer(purse, TransitLoadConfirmed.model_validate(purse.done[rid]))
    auth = purse.authorized.get(rid)
    if auth is not None:  # MAC2 was given: the card may hold the value
        why = _not_taken(aborted, auth, crypto)
        if why is not None:
            return Answer(purse, _refusal(aborted, purse, f"load not proven aborted: {why}",
                                          crypto, "unresolved"))
    authorized = {k: v for k, v in purse.authorized.items() if k != rid}
    answer = _refusal(aborted, purse, f"load aborted: {aborted.reason}", crypto)
    return Answer(purse.model_copy(update={
        "authorized": authorized, "done": {**purse.done, rid: answer.model_dump(mode="json")}}),
        answer)


def _not_taken(aborted: TransitLoadAborted, auth: Authorized, crypto: OperatorCrypto
               ) -> str | None:
    """None if the card's evidence proves the authorized load was not taken; else why not."""
    probe = aborted.evidence
    if probe is None:
        return "no card evidence"
    try:
        crypto.check_probe(aborted, auth)
    except CryptoError as exc:
        return f"card evidence: {exc}"
    if probe.load_counter != auth.load_counter:
        return (f"the purse's online sequence is {probe.load_counter}, not "
                f"{auth.load_counter}")
    if probe.balance != auth.new_balance - auth.amount:
        return f"the purse's balance is {probe.balance}, not {auth.new_balance - auth.amount}"
    return None


class HsmOperator:
    """``OperatorCrypto`` over the operator's ``ProviderHsm``."""

    def __init__(self, hsm: ProviderHsm, platform_check: object) -> None:
        self.hsm = hsm
        self.provider_id = hsm.provider_id
        self._platform_check = platform_check

    def verify_platform(self, event: Event) -> None:
        self._platform_check.verify_platform(event)  # type: ignore[attr-defined]

    def mac2(self, req: TransitLoadRequested, date_time: datetime) -> bytes:
        return self.hsm.authorize_load(
            req.card_token, bytes.fromhex(req.card_random), req.load_counter,
            req.balance_before, req.amount.amount, req.terminal_id, card_time(date_time),
            bytes.fromhex(req.mac1))

    def check_tac(self, applied: TransitLoadApplied, auth: Authorized) -> None:
        self.hsm.verify_load_tac(applied.card_token, auth.new_balance, auth.load_counter,
                                 auth.amount, auth.terminal_id, card_time(auth.date_time),
                                 bytes.fromhex(applied.tac))

    def check_probe(self, aborted: TransitLoadAborted, auth: Authorized) -> None:
        probe = aborted.evidence
        if probe is None:
            raise MacInvalid("no card evidence")
        mac2 = TransitLoadAuthorized.model_validate(auth.answer).mac2
        self.hsm.verify_purse_probe(aborted.card_token, bytes.fromhex(probe.card_random),
                                    probe.load_counter, probe.balance, probe.probe_amount,
                                    bytes.fromhex(mac2), bytes.fromhex(probe.mac1))

    def seal(self, event: Event) -> Event:
        return self.hsm.sign_event(event)


@dataclass(frozen=True)
class TransitOperator(ProviderAdapter):
    """A transit operator's adapter: issues e-purses, authorizes and books loads."""

    def issue_transit_card(self, hsm: ProviderHsm, *, balance: int = 0,
                           card_no: str | None = None, card_id: str | None = None
                           ) -> CardProfile:
        """Personalise an e-purse with keys derived from the operator's load and TAC keys."""
        card_no = card_no or make_pan(self.card_bin)
        token = hsm.transit_card_token(card_no)
        dlk, dtk = hsm.transit_card_keys(token)
        return CardProfile(
            card_id=card_id or f"{self.provider_id}-{card_no[-4:]}",
            provider=self.provider_id, kind="transit", aid=self.aid, label=self.label,
            pan=card_no, pan_token=token, expiry="301231", load_key=dlk.hex().upper(),
            tac_key=dtk.hex().upper(), initial_balance=balance)

    authorize_load = staticmethod(authorize_load)
    confirm_load = staticmethod(confirm_load)
    abort_load = staticmethod(abort_load)

    def load_step(self, ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted,
                  purse: Purse | None, crypto: OperatorCrypto) -> Answer:
        """One load step on the purse's record: authorize (MAC2), confirm (TAC) or abort (the
        operator app's handler and the audit's replay of it both answer through here)."""
        if isinstance(ev, TransitLoadRequested):
            return self.authorize_load(ev, purse, crypto)
        if isinstance(ev, TransitLoadApplied):
            return self.confirm_load(ev, purse, crypto)
        return self.abort_load(ev, purse, crypto)


adapter = TransitOperator(
    provider_id="transit",
    name="City Transit",
    kind="transit",
    aid="A000000632010105",
    label="TRANSIT PURSE",
    transit_aids=("A000000632010105",),
    card_bin="310000",
    currency="CNY",
)
