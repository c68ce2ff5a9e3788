"""Ledger events inside a provider: a card issued (its record and account opened), and the
settlement cut-over command.

Both travel on the provider's own request topic (``cardbus.provider.<id>.requests``), keyed by
the card's PAN token (``CardIssued``) or sent to every partition (``SettlementCutoverRequested``),
so each lands in the partition that holds the card's state. The PIN verification value travels
encrypted under the provider's own data key: only the provider opens it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.base import Currency, EncryptedBlob, Event, MaskedPan, PanToken, ProviderId
from schemas.values import Amount, KeyId, Text


class CardIssued(Event):
    """A provider issued a card: open its card record and its account."""

    SEALED_BY: ClassVar[str] = "provider identity key"

    type: Literal["CardIssued"] = "CardIssued"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    pan_token: PanToken
    masked_pan: MaskedPan
    account_id: Text
    psn: str = Field(default="00", pattern=r"^\d{2}$")
    expiry: str = Field(pattern=r"^\d{4}$", description="YYMM")
    currency: Currency
    opening_balance: Amount
    per_txn_limit: Amount
    pvki: str = Field(default="1", pattern=r"^\d$")
    pin_verification_encrypted: EncryptedBlob = Field(
        description="the card's PVV, encrypted under the provider's data key")


class SettlementCutoverRequested(Event):
    """Close the open settlement batch (sent to every partition of the provider's topic)."""

    SEALED_BY: ClassVar[str] = "provider identity key (the provider's own operator)"

    type: Literal["SettlementCutoverRequested"] = "SettlementCutoverRequested"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    batch_id: KeyId
