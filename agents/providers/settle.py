"""Settlement cut-over: the provider's own signed command, sent to every partition of its
request topic (each partition closes the part of the batch it holds, in order with its
payments), and the totals of the batch it closes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cardbus.crypto.hsm import ProviderHsm
from schemas.base import header
from schemas.ledger import SettlementCutoverRequested
from schemas.settlement import SettlementBatchClosed


def batch_id_for(provider_id: str, at: datetime) -> str:
    """The batch id of a cut-over at ``at``: ``bank-a-20261125T2300``."""
    return f"{provider_id}-{at.strftime('%Y%m%dT%H%M%S')}"


def cutover_events(hsm: ProviderHsm, batch_id: str, now: datetime,
                   partitions: int) -> list[tuple[int, SettlementCutoverRequested]]:
    """One sealed cut-over command per partition."""
    out = []
    for p in range(partitions):
        ev = SettlementCutoverRequested(
            **header(f"provider:{hsm.provider_id}", batch_id, now),
            provider_id=hsm.provider_id, batch_id=batch_id)
        out.append((p, hsm.sign_event(ev)))
    return out


def totals(closed: Iterable[SettlementBatchClosed]) -> dict[str, dict[str, int]]:
    """Per currency: approved count/amount, reversed count/amount, net, over batch parts."""
    out: dict[str, dict[str, int]] = {}
    for part in closed:
        for t in part.totals:
            acc = out.setdefault(t.currency, dict.fromkeys(
                ("approved_count", "approved_amount", "reversed_count", "reversed_amount",
                 "net_amount"), 0))
            for k in acc:
                acc[k] += getattr(t, k)
    return out
