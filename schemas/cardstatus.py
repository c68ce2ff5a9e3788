"""Lost and stolen cards: the issuer blocks and unblocks a card, its EMV issuer scripts reach the
card at its next tap, and the terminal reports what the card answered.

- ``CardBlocked`` / ``CardUnblocked``: the issuer's own events on its request topic
  (``cardbus.provider.<id>.requests``), keyed by the card's PAN token like ``CardIssued``: they
  sit in the card's partition in order with its authorizations, so the decisions after them, and
  the audit's re-derivation of those decisions, see the card's state exactly as it was.
- An ``AuthorizationDecided`` (and the ``PaymentCompleted`` the platform forwards) carries an
  ``IssuerScript``: APPLICATION BLOCK for a lost or stolen card, APPLICATION UNBLOCK after the
  issuer unblocked it, with its script MAC (bound to that tap's ATC and cryptogram).
- ``IssuerScriptApplied``: the terminal's report of the card's status word for the script
  (``cardbus.payment-requests``, keyed by PAN token, terminal MAC); the platform forwards it to
  the issuer as ``IssuerScriptReported`` (platform signature), which clears a pending unblock.

Scripts travel in base64 (an APDU in hex may look like a PAN to a scanner).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import B64, Event, MaskedPan, PanToken, ProviderId, TerminalId
from schemas.cardmgmt import StatusWord

ScriptKind = Literal["block", "unblock"]


class IssuerScript(BaseModel):
    """An EMV issuer script command for the card of one tap (secure messaging, CLA '84')."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ScriptKind
    command: B64 = Field(max_length=64, description="the APDU with its script MAC, base64")


class CardBlocked(Event):
    """The issuer reports a card lost or stolen: its payments are declined (41, 43) and the
    card's payment application is blocked by an issuer script at its next tap."""

    SEALED_BY: ClassVar[str] = "issuer identity key"

    type: Literal["CardBlocked"] = "CardBlocked"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    pan_token: PanToken
    masked_pan: MaskedPan
    reason: Literal["lost", "stolen"]


class CardUnblocked(Event):
    """The issuer lifts a block: payments are decided again, and the card's next tap gets the
    APPLICATION UNBLOCK script."""

    SEALED_BY: ClassVar[str] = "issuer identity key"

    type: Literal["CardUnblocked"] = "CardUnblocked"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    pan_token: PanToken
    masked_pan: MaskedPan


class IssuerScriptApplied(Event):
    """The terminal gave the card the issuer's script of payment ``correlation_id``; the card
    answered ``sw`` ('9000' applied, '6988' MAC refused, '6985' out of sequence)."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["IssuerScriptApplied"] = "IssuerScriptApplied"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    pan_token: PanToken
    request_event_id: str = Field(description="the PaymentRequested whose answer carried it")
    script: ScriptKind
    sw: StatusWord


class IssuerScriptReported(Event):
    """The platform tells the issuer what the card answered to its script."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["IssuerScriptReported"] = "IssuerScriptReported"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    pan_token: PanToken
    terminal_id: TerminalId
    report_event_id: str = Field(description="the terminal's IssuerScriptApplied")
    script: ScriptKind
    sw: StatusWord
