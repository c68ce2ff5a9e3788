"""Payment events: terminal request, per-provider authorization, decision, result, reversal.

Flow: ``PaymentRequested`` (terminal -> platform, terminal MAC) -> ``AuthorizationRequested``
(platform -> ``cardbus.provider.<id>.requests``, platform signature) -> ``AuthorizationDecided``
(provider -> ``cardbus.provider-results``, provider signature, hash-chained) ->
``PaymentCompleted`` (platform -> ``cardbus.terminal-results``). A timeout or a late approval
gives ``ReversalRequested`` -> ``ReversalCompleted``. The correlation id is the payment id.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.base import Event, MaskedPan, Money, PanToken, ProviderId, TerminalId
from schemas.cards import CardRead, add_cvm_results
from schemas.cardstatus import IssuerScript
from schemas.upcast import Raw, upcaster
from schemas.values import (
    AuthCode,
    Cryptogram8,
    EncryptedPinBlock,
    KeyId,
    Merchant,
    ResponseCode,
    SeqNo,
    Sha256Hex,
    Text,
)

APPROVED = "00"


class _PinBlockUnderKey:
    """Mixin check: a PIN block travels only with the id of the key it is encrypted under."""

    def _check_pin_pair(self) -> None:
        block, key_id = getattr(self, "pin_block", None), getattr(self, "pin_key_id", None)
        if (block is None) != (key_id is None):
            raise ValueError("pin_key_id: a pin_block needs the id of its PIN key, and only then")


class PaymentRequested(Event, _PinBlockUnderKey):
    """A terminal asks for a payment (v2: amount is ``Money``; v1 had flat fields; v3: the card
    carries its CVM results)."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["PaymentRequested"] = "PaymentRequested"
    schema_version: Literal[3] = 3

    terminal_id: TerminalId
    merchant: Merchant
    amount: Money
    purpose: Literal["purchase", "transit_load"] = "purchase"
    card: CardRead
    pin_block: EncryptedPinBlock | None = Field(
        default=None, description="ISO 9564 PIN block encrypted under pin_key_id (terminal)"
    )
    pin_key_id: KeyId | None = None

    @model_validator(mode="after")
    def _pin(self) -> PaymentRequested:
        self._check_pin_pair()
        return self


@upcaster("PaymentRequested", 1)
def _payment_requested_v1_to_v2(raw: Raw) -> Raw:
    """v1 carried ``amount_minor`` + ``currency`` flat; v2 carries ``amount: Money``."""
    raw["amount"] = {"amount": raw.pop("amount_minor", None), "currency": raw.pop("currency", None)}
    raw["schema_version"] = 2
    return raw


@upcaster("PaymentRequested", 2)
def _payment_requested_v2_to_v3(raw: Raw) -> Raw:
    """v2 cards carried no CVM results (9F34)."""
    raw = add_cvm_results(raw)
    raw["schema_version"] = 3
    return raw


class PaymentCancelled(Event):
    """A terminal gave up on a payment it had no answer for by its deadline (it resent the
    request meanwhile): whatever the bank decided for it must be undone. Keyed like the request
    (``pan_token``), so it follows the request in its partition."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["PaymentCancelled"] = "PaymentCancelled"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    request_event_id: str = Field(description="event id of the PaymentRequested given up on")
    pan_token: PanToken
    reason: Literal["no_answer", "card_removed", "operator"] = "no_answer"


class AuthorizationRequested(Event, _PinBlockUnderKey):
    """The platform asks one provider to authorize: PIN and PAN re-encrypted to the provider
    (v2: the card carries its CVM results)."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["AuthorizationRequested"] = "AuthorizationRequested"
    schema_version: Literal[2] = 2

    provider_id: ProviderId
    request_event_id: str = Field(description="event id of the PaymentRequested it answers")
    terminal_id: TerminalId
    merchant: Merchant
    amount: Money
    purpose: Literal["purchase", "transit_load"] = "purchase"
    card: CardRead = Field(description="card data; pan_encrypted is encrypted to the provider")
    pin_block: EncryptedPinBlock | None = Field(
        default=None, description="PIN block translated to the provider PIN key pin_key_id"
    )
    pin_key_id: KeyId | None = None

    @model_validator(mode="after")
    def _pin(self) -> AuthorizationRequested:
        self._check_pin_pair()
        return self


@upcaster("AuthorizationRequested", 1)
def _authorization_requested_v1_to_v2(raw: Raw) -> Raw:
    """v1 cards carried no CVM results (9F34)."""
    raw = add_cvm_results(raw)
    raw["schema_version"] = 2
    return raw


class AuthorizationDecided(Event):
    """A provider's answer. ``prev_hash`` chains the decisions of one partition (audit). v2: an
    issuer script for the card may come with it (APPLICATION BLOCK / UNBLOCK)."""

    SEALED_BY: ClassVar[str] = "provider identity key"

    type: Literal["AuthorizationDecided"] = "AuthorizationDecided"
    schema_version: Literal[2] = 2

    provider_id: ProviderId
    request_event_id: str
    pan_token: PanToken
    amount: Money
    approved: bool
    response_code: ResponseCode
    auth_code: AuthCode | None = None
    arpc: Cryptogram8 | None = None
    chain_id: KeyId = Field(description="the hash chain this decision extends: the provider and "
                                        "the request partition, e.g. bank-a.p3")
    sequence: SeqNo
    prev_hash: Sha256Hex = Field(description="SHA-256 of the previous decision's canonical bytes")
    issuer_script: IssuerScript | None = Field(
        default=None, description="a script for the card, bound to this tap's ATC and "
                                  "cryptogram (v2)")

    @model_validator(mode="after")
    def _consistent(self) -> AuthorizationDecided:
        if self.approved != (self.response_code == APPROVED):
            raise ValueError("response_code: approved must go with 00 and 00 with approved")
        if self.approved and self.auth_code is None:
            raise ValueError("auth_code: an approval carries an auth code")
        if self.issuer_script is not None and self.arpc is None:
            raise ValueError("issuer_script: only with an ARPC (a cryptogram that verified)")
        return self


@upcaster("AuthorizationDecided", 1)
def _authorization_decided_v1_to_v2(raw: Raw) -> Raw:
    """v1 carried no issuer script."""
    raw["issuer_script"] = None
    raw["schema_version"] = 2
    return raw


class PaymentCompleted(Event):
    """The platform tells the terminal how its payment ended (v2: with the issuer's script for
    the card, if its decision carried one)."""

    SEALED_BY: ClassVar[str] = "platform (MAC under the terminal MAC key)"

    type: Literal["PaymentCompleted"] = "PaymentCompleted"
    schema_version: Literal[2] = 2

    terminal_id: TerminalId
    provider_id: ProviderId | None = None
    masked_pan: MaskedPan
    amount: Money
    approved: bool
    response_code: ResponseCode
    auth_code: AuthCode | None = None
    arpc: Cryptogram8 | None = None
    message: Text
    issuer_script: IssuerScript | None = None


@upcaster("PaymentCompleted", 1)
def _payment_completed_v1_to_v2(raw: Raw) -> Raw:
    """v1 carried no issuer script."""
    raw["issuer_script"] = None
    raw["schema_version"] = 2
    return raw


ReversalReason = Literal["timeout", "late_approval", "transit_load_failed", "terminal_cancelled",
                         "unmatched_approval"]


class ReversalRequested(Event):
    """Undo an authorization (timeout, late approval, failed transit load)."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["ReversalRequested"] = "ReversalRequested"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    original_event_id: str = Field(description="event id of the AuthorizationRequested")
    pan_token: PanToken
    amount: Money
    reason: ReversalReason


class ReversalCompleted(Event):
    """A provider's answer to a reversal (idempotent: a second request gets the same answer)."""

    SEALED_BY: ClassVar[str] = "provider identity key"

    type: Literal["ReversalCompleted"] = "ReversalCompleted"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    original_event_id: str
    pan_token: PanToken
    amount: Money
    reversed: bool
    response_code: ResponseCode
