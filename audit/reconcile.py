"""Reconciliation: the banks' decisions against the terminals' outcomes.

The promise checked: no bank keeps money for a payment whose terminal never heard back, and no
terminal was told "approved" for money no bank holds. From the provider results, the terminal
results and the terminals' cancellations it lists:

- ``held_without_outcome``: an approval a bank still holds (not reversed) for a payment whose
  terminal got no approval (none sent, or the terminal cancelled);
- ``outcome_without_decision``: an approval told to a terminal with no approval from its bank;
- ``reversed_after_approval``: an approval told to a terminal and then reversed at the bank,
  where the terminal did not cancel and no top-up load failed (the customer was told "paid");
- ``loads_unresolved``: top-ups whose transit operator could not settle the load after MAC2
  (``TransitLoadConfirmed`` outcome ``unresolved``: neither a proof of load nor the card's
  evidence that it was not loaded) and that no later answer booked or voided: the funding
  payment is held, not reversed, until someone looks (the purse's next online load shows it);
- ``in_flight``: decisions or outcomes younger than the grace window (not judged yet).

Pure: ``reconcile`` takes the records already read (``audit.reader``); nothing here talks to
Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from audit.model import Record
from cardbus.errors import DecodeError
from schemas.payments import (
    AuthorizationDecided,
    PaymentCancelled,
    PaymentCompleted,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.transit import TransitLoadConfirmed
from streams import codec

_TOPICS = ("provider-results", "terminal-results", "payment-requests")
_ACCEPTED_REVERSALS = frozenset({"transit_load_failed"})


@dataclass
class Reconciliation:
    """What ``reconcile`` found (payment ids, sorted)."""

    decisions: int = 0
    outcomes: int = 0
    held_without_outcome: list[str] = field(default_factory=list)
    outcome_without_decision: list[str] = field(default_factory=list)
    reversed_after_approval: list[str] = field(default_factory=list)
    loads_unresolved: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.held_without_outcome or self.outcome_without_decision
                    or self.reversed_after_approval or self.loads_unresolved)


def reconcile(records: Iterable[Record], *, now_ms: int, grace_ms: int = 60_000
              ) -> Reconciliation:
    """Match every approval at a bank with the outcome at its terminal (see the module
    docstring); records younger than ``grace_ms`` at ``now_ms`` are in flight."""
    approved: dict[str, tuple[AuthorizationDecided, int]] = {}
    told: dict[str, tuple[PaymentCompleted, int]] = {}
    reversed_ids: set[str] = set()  # auth event ids a bank reversed
    reasons: dict[str, set[str]] = {}
    cancelled: set[str] = set()
    loads: dict[str, str] = {}  # load request id -> payment id, while unresolved
    for rec in records:
        if rec.topic not in _TOPICS or rec.value is None:
            continue
        try:
            ev = codec.decode(None, rec.value)
        except DecodeError:
            continue  # the audit reports bad records; reconciliation matches good ones
        if isinstance(ev, AuthorizationDecided) and ev.approved:
            approved.setdefault(ev.correlation_id, (ev, rec.timestamp_ms))
        elif isinstance(ev, ReversalCompleted) and ev.reversed:
            reversed_ids.add(ev.original_event_id)
        elif isinstance(ev, ReversalRequested):
            reasons.setdefault(ev.correlation_id, set()).add(ev.reason)
        elif isinstance(ev, PaymentCompleted):
            told.setdefault(ev.correlation_id, (ev, rec.timestamp_ms))
        elif isinstance(ev, PaymentCancelled):
            cancelled.add(ev.correlation_id)
        elif isinstance(ev, TransitLoadConfirmed) and rec.topic == "provider-results":
            if ev.outcome == "unresolved":
                loads[ev.request_event_id] = ev.correlation_id
            else:  # booked or voided later: settled
                loads.pop(ev.request_event_id, None)
    out = Reconciliation(decisions=len(approved), outcomes=len(told))
    young = now_ms - grace_ms
    for pid, (dec, at) in approved.items():
        answer = told.get(pid)
        heard = answer is not None and answer[0].approved and pid not in cancelled
        undone = dec.request_event_id in reversed_ids
        if at > young or (answer is not None and answer[1] > young):
            out.in_flight.append(pid)
        elif not heard and not undone:
            out.held_without_outcome.append(pid)
        elif heard and undone and not reasons.get(pid, set()) & _ACCEPTED_REVERSALS:
            out.reversed_after_approval.append(pid)
    for pid, (done, done_at) in told.items():
        if done.approved and pid not in approved:
            (out.in_flight if done_at > young else out.outcome_without_decision).append(pid)
    out.loads_unresolved = sorted(set(loads.values()))
    for found in (out.held_without_outcome, out.outcome_without_decision,
                  out.reversed_after_approval, out.in_flight):
        found.sort()
    return out
