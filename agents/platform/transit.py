"""The platform's part of a transit top-up (patent figure 4), as pure functions.

The top-up is a bank payment with ``purpose="transit_load"``; once the bank approves it, the
platform's pending entry waits for the load (``load_stage``):

    await_load --TransitLoadRequested (terminal MAC)--> requested   (forwarded to the operator)
    requested  --TransitLoadAuthorized (operator)----> authorized  (forwarded to the terminal)
    authorized --TransitLoadApplied (terminal MAC)---> applied     (forwarded to the operator)
    applied    --TransitLoadConfirmed (operator)-----> confirmed   (forwarded to the terminal)

A load that fails before the card could take it (the operator refuses, the terminal reports
the card did not take it before MAC2, or no load request comes in time) reverses the funding
payment: ``failed``, once. After MAC2 was given the card may have taken the load, so neither a
deadline nor the terminal's word reverses it then:

    authorized --TransitLoadAborted (terminal MAC)---> voiding     (forwarded to the operator)
    voiding    --TransitLoadConfirmed voided---------> failed      (reversed: the card's
                                                                    evidence proved no load)
    voiding    --TransitLoadConfirmed unresolved-----> reconcile   (not reversed; listed by
                                                                    reconciliation)

A ``reconcile`` top-up may still end ``confirmed`` (a late proof of load) or ``failed`` (later
card evidence). Operator answers must come from the operator the load was sent to, for this
card (and, for MAC2, this amount and terminal).
Everything the platform forwards it re-seals with its identity key: terminals and operators
check one key.
"""

from __future__ import annotations

from datetime import datetime

from agents.platform.decide import (
    Out,
    Pending,
    Rejected,
    Route,
    check_provider_seal,
    derived_id,
    reversal,
)
from cardbus.crypto.hsm import PlatformHsm
from cardbus.errors import CryptoError
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)

NO_CARD = "tok_no-card-presented"
"""The card token of a timeout notice for a top-up whose card never came to be loaded."""


def _terminal_mac(ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted,
                  hsm: PlatformHsm) -> None:
    try:
        hsm.verify_terminal_mac(ev.terminal_id, ev)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {ev.type} {ev.event_id}: {exc}") from None


def _mine(ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted,
          pending: Pending | None) -> Pending:
    if pending is None or pending.purpose != "transit_load":
        raise Rejected(f"{ev.type} {ev.event_id}: no top-up payment {ev.correlation_id}")
    if pending.terminal_id != ev.terminal_id:
        raise Rejected(f"{ev.type} {ev.event_id}: top-up belongs to another terminal")
    return pending


def request_load(ev: TransitLoadRequested, *, pending: Pending | None,
                 routes: dict[str, Route], hsm: PlatformHsm, received_at: datetime
                 ) -> tuple[Pending, Out]:
    """The card's load request: check it against the approved funding payment, forward."""
    _terminal_mac(ev, hsm)
    pending = _mine(ev, pending)
    out = Out()
    if pending.load_stage != "await_load":
        if pending.load_request_id == ev.event_id:
            return pending, out  # redelivered: already forwarded
        raise Rejected(f"load {ev.event_id}: payment {pending.payment_id} is "
                       f"{pending.load_stage}, not waiting for a load")
    if not pending.approved or ev.amount != pending.amount:
        raise Rejected(f"load {ev.event_id}: amount or approval does not match the payment")
    if ev.funding_pan_token != pending.pan_token:
        raise Rejected(f"load {ev.event_id}: not funded by the payment's card")
    route = routes.get(ev.operator_id)
    if route is None or route.kind != "transit" or ev.aid not in route.transit_aids:
        raise Rejected(f"load {ev.event_id}: no transit operator {ev.operator_id} for "
                       f"{ev.aid}")
    forwarded = hsm.sign_event(ev.model_copy(update={"occurred_at": received_at,
                                                     "producer": "platform"}))
    out.add(f"provider:{ev.operator_id}", ev.card_token, forwarded)
    return pending.model_copy(update={
        "load_stage": "requested", "load_request_id": ev.event_id,
        "operator_id": ev.operator_id, "card_token": ev.card_token}), out


def _fail(pending: Pending, out: Out, *, at: datetime, hsm: PlatformHsm) -> Pending:
    """Reverse the funding payment (once) and mark the top-up failed."""
    if not pending.reversed:
        out.add(f"provider:{pending.provider_id}", pending.pan_token,
                reversal(pending, "transit_load_failed", at=at, hsm=hsm))
    return pending.model_copy(update={"load_stage": "failed", "reversed": True})


def _forwarded(ev: TransitLoadAuthorized | TransitLoadConfirmed, hsm: PlatformHsm
               ) -> TransitLoadAuthorized | TransitLoadConfirmed:
    """The operator's answer as the platform forwards it to the terminal: produced and sealed
    by the platform (the terminal checks one key; the operator's own copy stays on the
    provider results)."""
    return hsm.sign_event(ev.model_copy(update={"producer": "platform"}))


def operator_answer(ev: TransitLoadAuthorized | TransitLoadConfirmed, *,
                    pending: Pending | None, route: Route | None, hsm: PlatformHsm
                    ) -> tuple[Pending | None, Out]:
    """The operator authorized (MAC2) or confirmed/refused: forward to the terminal; a refusal
    reverses the funding payment."""
    check_provider_seal(ev, route)
    out = Out()
    if pending is None or pending.load_request_id != ev.request_event_id:
        raise Rejected(f"{ev.type} {ev.event_id} answers no top-up in progress")
    _same_load(ev, pending)
    if isinstance(ev, TransitLoadAuthorized):
        if pending.load_stage != "requested":
            return pending, out  # redelivered
        new = pending.model_copy(update={"load_stage": "authorized"})
    elif ev.outcome == "booked":
        if pending.load_stage == "confirmed":
            return pending, out
        new = pending.model_copy(update={"load_stage": "confirmed"})
    elif ev.outcome == "unresolved":
        if pending.load_stage == "reconcile":
            return pending, out
        new = pending.model_copy(update={"load_stage": "reconcile"})
    else:
        if pending.load_stage == "failed" and pending.reversed:
            out.add("terminal", pending.terminal_id, _forwarded(ev, hsm))
            return pending, out
        new = _fail(pending, out, at=ev.occurred_at, hsm=hsm)
    out.add("terminal", pending.terminal_id, _forwarded(ev, hsm))
    return new, out


def _same_load(ev: TransitLoadAuthorized | TransitLoadConfirmed, pending: Pending) -> None:
    """``Rejected`` unless ``ev`` is about the load sent: its operator, card (and amount and
    terminal for MAC2). A sealed answer from another registered operator answers nothing."""
    if ev.operator_id != pending.operator_id or ev.card_token != pending.card_token:
        raise Rejected(f"{ev.type} {ev.event_id} from {ev.operator_id} for card "
                       f"{ev.card_token} does not match the load sent to "
                       f"{pending.operator_id} for {pending.card_token}")
    if isinstance(ev, TransitLoadAuthorized) and (
            ev.amount != pending.amount or ev.terminal_id != pending.terminal_id):
        raise Rejected(f"{ev.type} {ev.event_id} authorizes {ev.amount} at {ev.terminal_id}, "
                       f"not {pending.amount} at {pending.terminal_id}")


def card_report(ev: TransitLoadApplied | TransitLoadAborted, *, pending: Pending | None,
                hsm: PlatformHsm, received_at: datetime) -> tuple[Pending, Out]:
    """The terminal says the card took the load (TAC) or did not: forward to the operator.
    Before MAC2 a load the card did not take reverses the funding payment; after MAC2 the
    operator decides from the card's evidence (``voiding``), never the terminal's word."""
    _terminal_mac(ev, hsm)
    pending = _mine(ev, pending)
    out = Out()
    if pending.load_request_id != ev.request_event_id or pending.operator_id is None:
        raise Rejected(f"{ev.type} {ev.event_id} matches no load request")
    if pending.load_stage in ("applied", "confirmed", "failed"):
        return pending, out  # redelivered
    if pending.load_stage in ("voiding", "reconcile") and (
            isinstance(ev, TransitLoadAborted) and ev.evidence is None):
        return pending, out  # the operator has (or had) this claim already
    forwarded = hsm.sign_event(ev.model_copy(update={"occurred_at": received_at,
                                                     "producer": "platform"}))
    out.add(f"provider:{pending.operator_id}", ev.card_token, forwarded)
    if isinstance(ev, TransitLoadApplied):
        return pending.model_copy(update={"load_stage": "applied"}), out
    if pending.load_stage in ("authorized", "voiding", "reconcile"):  # MAC2 is out
        return pending.model_copy(update={"load_stage": "voiding"}), out
    return _fail(pending, out, at=received_at, hsm=hsm), out


def expire_load(pending: Pending, *, now: datetime, hsm: PlatformHsm) -> tuple[Pending, Out]:
    """No load request (or no operator answer) in time: reverse the funding payment and tell
    the terminal why."""
    out = Out()
    new = _fail(pending, out, at=pending.deadline, hsm=hsm)
    notice = TransitLoadConfirmed(
        event_id=derived_id("load-timeout", pending.auth_event_id),
        correlation_id=pending.payment_id, occurred_at=pending.deadline, producer="platform",
        operator_id=pending.operator_id or "transit",
        request_event_id=pending.load_request_id or pending.request_event_id,
        card_token=pending.card_token or NO_CARD, confirmed=False, outcome="voided",
        balance=0,
        reason="top-up timed out before the card was loaded: payment reversed")
    out.add("terminal", pending.terminal_id, hsm.sign_event(notice))
    del now
    return new, out
