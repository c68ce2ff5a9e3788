"""The trusted platform's decisions as pure functions: ``(state, event) -> (state, outputs)``.

No Kafka, no clock: "now" is the time the input carries (a request's broker timestamp, a clock
tick's time), so a replay gives the same outputs. The platform HSM (``PlatformHsm``) does every
crypto step; PINs and PANs never leave it.

Payment steps, in order: duplicate? -> terminal known and active -> terminal MAC -> route (transit
AID, else BIN) -> PIN block and PAN to the provider's keys -> sign -> the provider's topic, and a
pending entry with its deadline. A provider decision: signature -> pending? -> forward to the
terminal (or, after a timeout, reverse a late approval). A clock tick: decline (91) and reverse
every pending payment past its deadline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import b64d
from cardbus.crypto.signing import Verifier, verify_event
from cardbus.errors import CardBusError, CryptoError
from cardbus.response_codes import (
    ISSUER_UNAVAILABLE,
    NO_ROUTE,
    SUSPENDED_TERMINAL,
    message,
)
from schemas.base import Event, Money, header
from schemas.cardstatus import IssuerScript
from schemas.clock import ClockTicked
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCancelled,
    PaymentCompleted,
    PaymentRequested,
    ReversalReason,
    ReversalRequested,
)
from schemas.providers import ProviderKeysProvisioned, ProviderRegistered
from schemas.terminals import (
    IssuedKey,
    ProviderCardAuthKey,
    TerminalEnrolled,
    TerminalKeysIssued,
    TerminalStatusChanged,
)
from schemas.values import BinRange

DEFAULT_TIMEOUT = timedelta(seconds=3)
_STATE = ConfigDict(frozen=True, extra="forbid")


class Rejected(CardBusError):
    """An input the platform will not act on (goes to dead letters with this reason)."""

    code = "rejected"


class ReplayChanged(Rejected):
    """A known request id (or payment id) arrived again with other content: an attack or a
    bug, never answered."""

    code = "replay-changed"


# ---------------------------------------------------------------------------------------------
# state


class Route(BaseModel):
    """What the platform knows of a provider: where its cards go and how to check it."""

    model_config = _STATE

    provider_id: str
    kind: Literal["bank", "transit"]
    bin_ranges: tuple[BinRange, ...] = ()
    payment_aids: tuple[str, ...] = ()
    transit_aids: tuple[str, ...] = ()
    identity_key_id: str
    identity_public_key: str
    card_auth_key_id: str
    card_auth_public_key: str
    keys_ready: bool = False

    def verifier(self) -> Verifier:
        return Verifier(self.identity_key_id, b64d(self.identity_public_key))


class TerminalRecord(BaseModel):
    """An enrolled terminal: status, identity, and the key set last issued to it."""

    model_config = _STATE

    terminal_id: str
    status: Literal["active", "suspended"] = "active"
    identity_key_id: str
    identity_public_key: str
    wrap_public_key: str
    issued: tuple[IssuedKey, ...] = ()


class Pending(BaseModel):
    """A payment sent to a provider and not yet answered to the terminal."""

    model_config = _STATE

    payment_id: str
    request_event_id: str
    auth_event_id: str
    terminal_id: str
    provider_id: str
    pan_token: str
    masked_pan: str
    amount: Money
    deadline: datetime
    state: Literal["sent", "answered", "timed_out", "cancelled"] = "sent"
    purpose: Literal["purchase", "transit_load"] = "purchase"
    approved: bool = False
    # transit top-up, after the funding payment is approved
    load_stage: Literal["none", "await_load", "requested", "authorized", "applied",
                        "voiding", "reconcile", "confirmed", "failed"] = "none"
    load_request_id: str | None = None
    operator_id: str | None = None
    card_token: str | None = None
    reversed: bool = False

    @property
    def waiting(self) -> bool:
        """Whether a deadline applies now (the tick looks at these)."""
        return self.state == "sent" or self.load_stage in ("await_load", "requested")


@dataclass
class Out:
    """Events to publish: (topic role, key, event). Roles are resolved to topic names by the
    agent (``provider:<id>`` means that provider's request topic)."""

    events: list[tuple[str, str, Event]] = field(default_factory=list)

    def add(self, role: str, key: str, event: Event) -> None:
        self.events.append((role, key, event))


def derived_id(kind: str, source_event_id: str) -> str:
    """A deterministic event id for the ``kind`` output caused by ``source_event_id``."""
    return hashlib.sha256(f"platform:{kind}:{source_event_id}".encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# providers


def register_provider(ev: ProviderRegistered, current: Route | None) -> Route:
    """Learn (or update) a provider's route. The registration must be sealed by the identity
    key it declares (proof of possession); a changed identity key is refused. This alone is
    trust on first use: ``agents.platform.admission.register_admitted`` adds the operator's
    admission and the overlap check."""
    verifier = Verifier(ev.identity_key_id, b64d(ev.identity_public_key))
    try:
        verify_event(ev, lambda kid: verifier if kid == ev.identity_key_id else None)
    except CryptoError as exc:
        raise Rejected(f"registration of {ev.provider_id}: {exc}") from None
    if current is not None and current.identity_public_key != ev.identity_public_key:
        raise Rejected(f"registration of {ev.provider_id}: identity key changed; "
                       f"re-registration with a new identity needs an operator")
    return Route(provider_id=ev.provider_id, kind=ev.kind, bin_ranges=ev.bin_ranges,
                 payment_aids=ev.payment_aids, transit_aids=ev.transit_aids,
                 identity_key_id=ev.identity_key_id,
                 identity_public_key=ev.identity_public_key,
                 card_auth_key_id=ev.card_auth_key_id,
                 card_auth_public_key=ev.card_auth_public_key,
                 keys_ready=current.keys_ready if current else False)


def provision_keys(ev: ProviderKeysProvisioned, route: Route | None, hsm: PlatformHsm) -> Route:
    """Accept a provider's TR-31 key blocks into the platform key store (encrypted there)."""
    if route is None:
        raise Rejected(f"keys from unregistered provider {ev.provider_id}")
    try:
        verify_event(ev, lambda kid: route.verifier() if kid == route.identity_key_id else None)
        for key in ev.keys:
            usage = KeyUsage(key.usage)
            if usage not in (KeyUsage.PIN_ENC, KeyUsage.PAN_ENC, KeyUsage.GP_ISD_MASTER):
                raise Rejected(f"key {key.key_id}: usage {key.usage} is not provisioned to the "
                               f"platform")
            _, _, ver = key.key_id.rpartition(".v")
            hsm.accept_key_block(ev.provider_id, usage, key.key_block,
                                 version=int(ver) if ver.isdigit() else None)
    except CryptoError as exc:
        raise Rejected(f"keys of {ev.provider_id}: {exc}") from None
    return route.model_copy(update={"keys_ready": True})


def card_auth_keys(routes: dict[str, Route]) -> tuple[ProviderCardAuthKey, ...]:
    """The terminals' provider directory: each provider's kind, the AIDs its cards carry and
    its card-authentication public key. A terminal learns a new provider's cards from this,
    with no code of that provider installed on it; a provider whose keys the platform does not
    hold yet is left out (its cards could not be routed)."""
    return tuple(ProviderCardAuthKey(
        provider_id=r.provider_id, kind=r.kind,
        aids=r.payment_aids if r.kind == "bank" else r.transit_aids,
        key_id=r.card_auth_key_id, public_key=r.card_auth_public_key)
        for r in sorted(routes.values(), key=lambda r: r.provider_id) if r.keys_ready)


# ---------------------------------------------------------------------------------------------
# terminals


def enroll_terminal(ev: TerminalEnrolled, current: TerminalRecord | None, hsm: PlatformHsm,
                    routes: dict[str, Route], *,
                    initial_status: Literal["active", "suspended"] = "active",
                    ) -> tuple[TerminalRecord, TerminalKeysIssued]:
    """Issue keys to a terminal that proved possession of its identity key. The same
    enrollment again gets the same keys again (idempotent). A new terminal gets
    ``initial_status``: ``suspended`` until an operator's signed ``TerminalStatusChanged``
    activates it (admission as the operator's act; ``active`` is trust on first use)."""
    verifier = Verifier(ev.identity_key_id, b64d(ev.identity_public_key))
    try:
        verify_event(ev, lambda kid: verifier if kid == ev.identity_key_id else None)
    except CryptoError as exc:
        raise Rejected(f"enrollment of {ev.terminal_id}: {exc}") from None
    if (current is not None and current.identity_public_key == ev.identity_public_key
            and current.wrap_public_key == ev.wrap_public_key and current.issued):
        record = current
    else:
        if current is not None and current.identity_public_key != ev.identity_public_key:
            raise Rejected(f"enrollment of {ev.terminal_id}: identity key changed")
        blobs = hsm.enroll_terminal(ev.terminal_id, b64d(ev.wrap_public_key))
        record = TerminalRecord(
            terminal_id=ev.terminal_id, identity_key_id=ev.identity_key_id,
            identity_public_key=ev.identity_public_key, wrap_public_key=ev.wrap_public_key,
            status=current.status if current else initial_status,
            issued=tuple(IssuedKey(key_id=b.key_id, usage=_ISSUED_USAGE[b.key_id.split(":")[0]],
                                   kcv=_kcv_of(hsm, b.key_id), wrapped=b) for b in blobs),
        )
    return record, keys_event(record, routes, hsm, cause=ev)


_ISSUED_USAGE: dict[str, Literal["mac", "pin_enc", "pan_enc"]] = {
    "tpk": "pin_enc", "tmk": "mac", "tpan": "pan_enc"}


def _kcv_of(hsm: PlatformHsm, versioned_key_id: str) -> str:
    key_id, _, version = versioned_key_id.rpartition(".v")
    return hsm.keys.record(key_id, int(version)).kcv


def keys_event(record: TerminalRecord, routes: dict[str, Route], hsm: PlatformHsm, *,
               cause: Event) -> TerminalKeysIssued:
    """The terminal's whole current key set (its wrapped keys + every card-auth key), signed."""
    ev = TerminalKeysIssued(
        event_id=derived_id(f"keys:{len(routes)}", cause.event_id),
        correlation_id=record.terminal_id,
        occurred_at=cause.occurred_at,
        producer="platform",
        terminal_id=record.terminal_id,
        keys=record.issued,
        card_auth_keys=card_auth_keys(routes),
        status=record.status,
    )
    return hsm.sign_event(ev)


def change_status(ev: TerminalStatusChanged, current: TerminalRecord | None,
                  operator: Verifier) -> TerminalRecord:
    """Activate or suspend a terminal: an operator's command, signed with ``operator``'s key
    (the platform's identity); anything else is refused."""
    if current is None:
        raise Rejected(f"status change for unknown terminal {ev.terminal_id}")
    try:
        verify_event(ev, lambda kid: operator if kid == operator.key_id else None)
    except CryptoError as exc:
        raise Rejected(f"status change of {ev.terminal_id}: {exc}") from None
    return current.model_copy(update={"status": ev.status})


# ---------------------------------------------------------------------------------------------
# payments


def route_card(routes: dict[str, Route], aid: str, bin6: str) -> Route | None:
    """The provider for a card: a transit AID first, then the BIN ranges of bank providers.
    A route whose keys are not ready is skipped (it could not take the card anyway)."""
    ready = sorted((r for r in routes.values() if r.keys_ready), key=lambda r: r.provider_id)
    for route in ready:
        if aid in route.transit_aids:
            return route
    for route in ready:
        if route.kind == "bank" and any(r.covers(bin6) for r in route.bin_ranges):
            return route
    return None


def complete(req_id: str, payment_id: str, terminal_id: str, masked_pan: str, amount: Money,
             code: str, *, occurred_at: datetime, hsm: PlatformHsm, provider_id: str | None,
             auth_code: str | None = None, arpc: str | None = None,
             kind: str = "complete", issuer_script: IssuerScript | None = None
             ) -> PaymentCompleted:
    """The signed answer to a terminal (with the issuer's script for the card, if any)."""
    ev = PaymentCompleted(
        event_id=derived_id(kind, req_id), correlation_id=payment_id, occurred_at=occurred_at,
        producer="platform", terminal_id=terminal_id, provider_id=provider_id,
        masked_pan=masked_pan, amount=amount, approved=code == "00", response_code=code,
        auth_code=auth_code, arpc=arpc, message=message(code), issuer_script=issuer_script)
    return hsm.sign_event(ev)


def request_payment(req: PaymentRequested, *, received_at: datetime,
                    terminal: TerminalRecord | None, routes: dict[str, Route], hsm: PlatformHsm,
                    timeout: timedelta = DEFAULT_TIMEOUT) -> tuple[Pending | None, Out]:
    """Check, translate, sign and route one payment request. Returns the pending entry (None if
    the payment was answered at once) and the events to publish. A forged request raises
    ``Rejected`` (dead letter, no answer: a forger gets nothing back)."""
    out = Out()
    card = req.card
    if terminal is None:
        raise Rejected(f"request from unknown terminal {req.terminal_id}")
    try:
        hsm.verify_terminal_mac(req.terminal_id, req)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {req.event_id}: {exc}") from None

    def decline(code: str) -> tuple[None, Out]:
        out.add("terminal", req.terminal_id, complete(
            req.event_id, req.correlation_id, req.terminal_id, card.masked_pan, req.amount, code,
            occurred_at=received_at, hsm=hsm, provider_id=None))
        return None, out

    if terminal.status != "active":
        return decline(SUSPENDED_TERMINAL)
    try:
        bin6 = hsm.bin_of(req.terminal_id, card.pan_encrypted, req.correlation_id)
    except CryptoError as exc:
        raise Rejected(f"encrypted PAN of {req.event_id}: {exc}") from None
    route = route_card(routes, card.aid, bin6)
    if route is None:
        return decline(NO_ROUTE)
    try:
        pan_blob = hsm.reencrypt_pan(req.terminal_id, route.provider_id, card.pan_encrypted,
                                     req.correlation_id)
        pin_key_id, pin_block = None, None
        if req.pin_block is not None and req.pin_key_id is not None:
            pin_key_id, block = hsm.translate_pin(
                req.terminal_id, route.provider_id, req.pin_key_id, bytes.fromhex(req.pin_block),
                card.pan_encrypted, req.correlation_id)
            pin_block = block.hex().upper()
    except CryptoError as exc:
        raise Rejected(f"PIN/PAN translation of {req.event_id}: {exc}") from None
    auth = AuthorizationRequested(
        event_id=derived_id("auth", req.event_id), correlation_id=req.correlation_id,
        occurred_at=received_at, producer="platform", provider_id=route.provider_id,
        request_event_id=req.event_id, terminal_id=req.terminal_id, merchant=req.merchant,
        amount=req.amount, purpose=req.purpose,
        card=card.model_copy(update={"pan_encrypted": pan_blob}),
        pin_block=pin_block, pin_key_id=pin_key_id)
    out.add(f"provider:{route.provider_id}", card.pan_token, hsm.sign_event(auth))
    pending = Pending(payment_id=req.correlation_id, request_event_id=req.event_id,
                      auth_event_id=auth.event_id, terminal_id=req.terminal_id,
                      provider_id=route.provider_id, pan_token=card.pan_token,
                      masked_pan=card.masked_pan, amount=req.amount,
                      deadline=received_at + timeout, purpose=req.purpose)
    return pending, out


def reversal(pending: Pending, reason: ReversalReason, *, at: datetime,
             hsm: PlatformHsm) -> ReversalRequested:
    """A signed reversal of ``pending``'s authorization."""
    return _reversal(pending.payment_id, pending.provider_id, pending.auth_event_id,
                     pending.pan_token, pending.amount, reason, at=at, hsm=hsm)


def _reversal(payment_id: str, provider_id: str, auth_event_id: str, pan_token: str,
              amount: Money, reason: ReversalReason, *, at: datetime,
              hsm: PlatformHsm) -> ReversalRequested:
    ev = ReversalRequested(
        **header("platform", payment_id, at, event_id=derived_id(f"reversal:{reason}",
                                                                 auth_event_id)),
        provider_id=provider_id, original_event_id=auth_event_id, pan_token=pan_token,
        amount=amount, reason=reason)
    return hsm.sign_event(ev)


def check_provider_seal(ev: Event, route: Route | None) -> None:
    """``Rejected`` unless ``ev`` is sealed by the registered identity key of its provider."""
    provider = getattr(ev, "provider_id", None) or getattr(ev, "operator_id", "?")
    if route is None:
        raise Rejected(f"{ev.type} from unregistered provider {provider}")
    try:
        verify_event(ev, lambda kid: route.verifier() if kid == route.identity_key_id else None)
    except CryptoError as exc:
        raise Rejected(f"{ev.type} {ev.event_id}: {exc}") from None


def take_decision(dec: AuthorizationDecided, *, pending: Pending | None, route: Route | None,
                  hsm: PlatformHsm, load_timeout: timedelta = timedelta(seconds=60)
                  ) -> tuple[Pending | None, Out]:
    """Verify a provider's decision and forward it; a late approval is reversed."""
    out = Out()
    check_provider_seal(dec, route)
    if pending is None or pending.auth_event_id != dec.request_event_id:
        raise Rejected(f"decision {dec.event_id} answers no pending payment")
    if pending.provider_id != dec.provider_id or pending.amount != dec.amount:
        raise Rejected(f"decision {dec.event_id} from {dec.provider_id} for {dec.amount} does "
                       f"not match payment {pending.payment_id} ({pending.provider_id}, "
                       f"{pending.amount})")
    if pending.state == "answered":
        return pending, out  # a redelivered decision: already forwarded
    if pending.state in ("timed_out", "cancelled"):
        if dec.approved:
            out.add(f"provider:{pending.provider_id}", pending.pan_token,
                    reversal(pending, "late_approval", at=dec.occurred_at, hsm=hsm))
        return pending.model_copy(update={"state": "answered"}), out
    out.add("terminal", pending.terminal_id, complete(
        pending.request_event_id, pending.payment_id, pending.terminal_id, pending.masked_pan,
        pending.amount, dec.response_code, occurred_at=dec.occurred_at, hsm=hsm,
        provider_id=dec.provider_id, auth_code=dec.auth_code, arpc=dec.arpc,
        issuer_script=dec.issuer_script))
    update: dict[str, object] = {"state": "answered", "approved": dec.approved}
    if dec.approved and pending.purpose == "transit_load":
        # the funds are held: now the transit card must be presented and loaded
        update.update(load_stage="await_load", deadline=dec.occurred_at + load_timeout)
    return pending.model_copy(update=update), out


def cancel(ev: PaymentCancelled, pending: Pending | None, *, received_at: datetime,
           hsm: PlatformHsm) -> tuple[Pending | None, Out]:
    """The terminal gave up on ``pending`` (no answer by its deadline): undo whatever the bank
    decided, once. The terminal's own "no answer" is the payment's final outcome there, so the
    platform sends it nothing."""
    try:
        hsm.verify_terminal_mac(ev.terminal_id, ev)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {ev.type} {ev.event_id}: {exc}") from None
    out = Out()
    if pending is None:
        return None, out
    if pending.terminal_id != ev.terminal_id or pending.request_event_id != ev.request_event_id:
        raise Rejected(f"{ev.type} {ev.event_id} names request {ev.request_event_id} of "
                       f"{ev.terminal_id}, not this payment's")
    if pending.state in ("cancelled", "timed_out"):
        return pending.model_copy(update={"state": "cancelled"}), out  # already undone
    undo = pending.state == "sent" or (
        pending.approved and not pending.reversed and pending.load_stage in ("none",
                                                                             "await_load"))
    if undo:
        out.add(f"provider:{pending.provider_id}", pending.pan_token,
                reversal(pending, "terminal_cancelled", at=received_at, hsm=hsm))
    return pending.model_copy(update={"state": "cancelled",
                                      "reversed": pending.reversed or undo}), out


def reverse_unmatched(dec: AuthorizationDecided, *, at: datetime,
                      hsm: PlatformHsm) -> Out:
    """A provider's decision that no payment claimed within the grace period: an approval is
    reversed (the provider must not keep money no terminal heard of); a decline needs nothing."""
    out = Out()
    if dec.approved:
        out.add(f"provider:{dec.provider_id}", dec.pan_token, _reversal(
            dec.correlation_id, dec.provider_id, dec.request_event_id, dec.pan_token,
            dec.amount, "unmatched_approval", at=at, hsm=hsm))
    return out


TICK_MAX_AHEAD = timedelta(seconds=5)
"""How far a clock tick may be ahead of the broker time of the record that carries it."""


def accept_tick(tick: ClockTicked, *, broker_time: datetime, platform: Verifier,
                max_ahead: timedelta = TICK_MAX_AHEAD) -> datetime:
    """The "now" a clock tick gives the deadlines. ``Rejected`` unless the platform sealed it
    (a terminal can write the topic ticks travel on) and it is at most ``max_ahead`` after
    the broker's time of its record (with ``LogAppendTime``, the broker's own clock)."""
    try:
        verify_event(tick, lambda kid: platform if kid == platform.key_id else None)
    except CryptoError as exc:
        raise Rejected(f"clock tick {tick.event_id}: {exc}") from None
    if tick.occurred_at > broker_time + max_ahead:
        raise Rejected(f"clock tick {tick.event_id} at {tick.occurred_at.isoformat()} is ahead "
                       f"of the broker's {broker_time.isoformat()}")
    return tick.occurred_at


def expire(pending: Pending, *, now: datetime, hsm: PlatformHsm) -> tuple[Pending, Out]:
    """Past its deadline: decline 91 to the terminal, reverse at the provider (or, for a
    top-up whose card never came to be loaded, reverse the funding payment)."""
    out = Out()
    if not pending.waiting or now < pending.deadline:
        return pending, out
    if pending.state == "answered":
        from agents.platform.transit import expire_load

        return expire_load(pending, now=now, hsm=hsm)
    out.add("terminal", pending.terminal_id, complete(
        pending.request_event_id, pending.payment_id, pending.terminal_id, pending.masked_pan,
        pending.amount, ISSUER_UNAVAILABLE, occurred_at=pending.deadline, hsm=hsm,
        provider_id=pending.provider_id, kind="timeout"))
    out.add(f"provider:{pending.provider_id}", pending.pan_token,
            reversal(pending, "timeout", at=pending.deadline, hsm=hsm))
    return pending.model_copy(update={"state": "timed_out"}), out
