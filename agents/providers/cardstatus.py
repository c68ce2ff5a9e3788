"""A card's status at its issuer: reported lost or stolen, unblocked again, and which EMV
issuer script its next taps carry. Pure: ``(card record, event) -> card record``.

- ``CardBlocked``: the card is declined (41 lost, 43 stolen: ``decide``) and every decision
  with an ARPC carries APPLICATION BLOCK, tap after tap (blocking a blocked application again
  is harmless, and the card may have left before the first one was applied);
- ``CardUnblocked``: decisions as before, carrying APPLICATION UNBLOCK until the card's answer
  '9000' to it is reported (``IssuerScriptReported``, forwarded by the platform from the
  terminal): an unblock the card never received would leave it blocked for good.

Each is the issuer's own sealed event (or the platform's, for a report) on the card's
partition, in order with its authorizations.
"""

from __future__ import annotations

from agents.providers.state import CardRecord
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptReported, ScriptKind

SW_OK = 0x9000


def pending_script(card: CardRecord | None) -> ScriptKind | None:
    """The issuer script the card's next decision carries, if any."""
    if card is None:
        return None
    if card.reported is not None:
        return "block"
    return "unblock" if card.unblock_pending else None


def block(ev: CardBlocked, card: CardRecord | None) -> CardRecord | None:
    """Report the card lost or stolen (None: no such card here, nothing to change)."""
    if card is None or card.reported == ev.reason:
        return None
    return card.model_copy(update={"reported": ev.reason, "unblock_pending": False})


def unblock(ev: CardUnblocked, card: CardRecord | None) -> CardRecord | None:
    """Lift a lost/stolen report: the next taps unblock the card's payment application."""
    if card is None or card.reported is None:
        return None
    return card.model_copy(update={"reported": None, "unblock_pending": True})


def script_reported(ev: IssuerScriptReported, card: CardRecord | None) -> CardRecord | None:
    """The card's answer to a script: an applied UNBLOCK ends the pending unblock."""
    if card is None or not (ev.script == "unblock" and ev.sw == SW_OK and card.unblock_pending):
        return None
    return card.model_copy(update={"unblock_pending": False})
