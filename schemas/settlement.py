"""Settlement: a provider's cut-over closes a batch whose totals the ledger must match.

Topic: ``cardbus.settlements`` (retained, keyed by provider id).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Currency, Event, ProviderId, UtcDatetime
from schemas.values import Amount, Count, KeyId, SeqNo


class CurrencyTotal(BaseModel):
    """The batch totals in one currency, in minor units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Currency
    approved_count: Count
    approved_amount: Amount
    reversed_count: Count
    reversed_amount: Amount
    net_amount: Amount

    @model_validator(mode="after")
    def _net(self) -> CurrencyTotal:
        if self.net_amount != self.approved_amount - self.reversed_amount:
            raise ValueError("net_amount: must equal approved_amount - reversed_amount")
        return self


class SettlementBatchClosed(Event):
    """A closed batch: which decisions it covers and what they add up to."""

    SEALED_BY: ClassVar[str] = "provider identity key"

    type: Literal["SettlementBatchClosed"] = "SettlementBatchClosed"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    batch_id: KeyId
    opened_at: UtcDatetime
    closed_at: UtcDatetime
    first_sequence: SeqNo
    last_sequence: SeqNo
    declined_count: Count
    totals: tuple[CurrencyTotal, ...] = Field(default=())

    @model_validator(mode="after")
    def _ranges(self) -> SettlementBatchClosed:
        if self.first_sequence > self.last_sequence:
            raise ValueError("last_sequence: must not be before first_sequence")
        if self.opened_at > self.closed_at:
            raise ValueError("closed_at: must not be before opened_at")
        currencies = [t.currency for t in self.totals]
        if len(set(currencies)) != len(currencies):
            raise ValueError("totals: one entry per currency")
        return self
