"""A provider's ledger state, as the pure decision functions see it.

Everything about one card lives under its PAN token, and the provider's request topic is keyed
by the PAN token, so one card's records, account, holds and ATC are all in one partition (replay
detection and balances need that ordering). One account per card; an account with several cards
is left to a later version.

- ``CardRecord``: status, expiry, limits, last ATC, PIN verification data (a PVV, never the PIN),
  PIN-try counter, a lost/stolen report and a pending unblock (``agents.providers.cardstatus``).
- ``Account``: ledger balance and holds (authorized, not yet cleared); available = balance - holds.
  Each hold names the settlement batch it was authorized in; once that batch is closed the hold
  is cleared into the balance the next time the card is used (``decide.settle``). Clearing does
  not change the available amount, so no decision depends on when it happens, and closing a
  batch touches no card record.
- ``CardLedger``: the card record, the account and the card's recent decisions, one record;
- ``ChainHead``: the per-partition hash chain of decisions (audit).
- ``OpenBatch``: the per-partition settlement batch being filled since the last cut-over: its
  running totals per currency, a record of fixed size whatever the number of payments in it.
- ``PartitionState``: a partition's chain head and open batch in one record (one changelog
  record per partition per batch of decisions, not two).
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Currency, EncryptedBlob, MaskedPan, Money, PanToken

_STATE = ConfigDict(frozen=True, extra="forbid")
GENESIS_HASH = "0" * 64
MAX_PIN_TRIES = 3


class PinCheck(BaseModel):
    """How the provider verifies a PIN for this card: a Visa PVV (with its key index), kept
    encrypted under the provider's data key; only the provider's HSM opens it."""

    model_config = _STATE

    method: Literal["pvv"] = "pvv"
    pvki: str = "1"
    sealed_value: EncryptedBlob


class CardRecord(BaseModel):
    """What the provider knows about one card."""

    model_config = _STATE

    pan_token: PanToken
    masked_pan: MaskedPan
    account_id: str
    psn: str = "00"
    expiry: str = Field(pattern=r"^\d{4}$", description="YYMM")
    status: Literal["active", "blocked"] = "active"
    pin: PinCheck
    pin_tries: int = 0
    last_atc: int | None = None
    per_txn_limit: int = 500_000
    reported: Literal["lost", "stolen"] | None = None  # the issuer's block (``CardBlocked``)
    unblock_pending: bool = False  # APPLICATION UNBLOCK goes out until the card applied it


class Hold(BaseModel):
    """An authorized amount not yet cleared, and the batch (number) it belongs to."""

    model_config = _STATE

    amount: int
    currency: Currency
    batch: int = 1


RECENT_REVERSALS = 64


class Account(BaseModel):
    """A ledger account: balance (cleared) and holds (authorized, not yet cleared)."""

    model_config = _STATE

    account_id: str
    currency: Currency
    opening_balance: int
    balance: int
    holds: dict[str, Hold] = Field(default_factory=dict)
    reversed: tuple[str, ...] = ()  # the last RECENT_REVERSALS request ids reversed

    @property
    def available(self) -> int:
        return self.balance - sum(h.amount for h in self.holds.values())

    def with_reversed(self, request_id: str) -> tuple[str, ...]:
        """``reversed`` with ``request_id`` added (the oldest dropped past the bound)."""
        return (*self.reversed, request_id)[-RECENT_REVERSALS:]


class ChainHead(BaseModel):
    """The last decision of one partition: its sequence number and hash."""

    model_config = _STATE

    chain_id: str = "unset.p0"
    sequence: int = -1
    last_hash: str = GENESIS_HASH


class BatchTotal(BaseModel):
    """Running totals of one currency in an open batch."""

    model_config = _STATE

    approved_count: int = 0
    approved_amount: int = 0
    reversed_count: int = 0
    reversed_amount: int = 0


class OpenBatch(BaseModel):
    """The settlement batch of one partition since the last cut-over."""

    model_config = _STATE

    number: int = 1
    opened_at: str | None = None  # ISO time of the first decision in it
    totals: dict[str, BatchTotal] = Field(default_factory=dict)  # currency -> running totals
    declined: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None


class PartitionState(BaseModel):
    """One request partition's chain head and open settlement batch: every decision moves
    both, so they are one record, written once per batch of decisions."""

    model_config = _STATE

    chain: ChainHead
    batch: OpenBatch = Field(default_factory=OpenBatch)


RECENT_DECISIONS = 64
"""Decisions a card's record remembers (as ``DecisionNote``s): a reversal finds the decision it
undoes (a platform timeout can come after dozens of newer payments of the card when a bank is
down; 16 was too few: the crash test left holds that were never released)."""

SEALED_DECISIONS = 4
"""Decisions a card's record keeps whole, as published: a redelivered request (a worker's
uncommitted tail after a crash or a rebalance, seconds) gets the very same decision again. A
whole decision is ~0.8 KB and the card's record is rewritten with every payment: keeping 64
made a busy card's record ~48 KB and its write ~0.8 ms of CPU per payment; 4 keep it ~5 KB."""


class DecisionNote(BaseModel):
    """What a reversal needs of a decision: whether it approved, and how much."""

    model_config = _STATE

    approved: bool
    amount: Money


class CardLedger(BaseModel):
    """Everything about one card in one record: its card record, its account, and its recent
    decisions (the idempotency record). One record means one changelog write per payment, so a
    crash can never keep a decision while losing the hold it placed (or the reverse). Its size
    is bounded whatever the card's history (``SEALED_DECISIONS`` whole, ``RECENT_DECISIONS``
    notes)."""

    model_config = _STATE

    card: CardRecord
    account: Account
    decided: dict[str, dict[str, object]] = Field(default_factory=dict)  # whole, newest last
    notes: dict[str, DecisionNote] = Field(default_factory=dict)  # newest last

    def decision(self, request_id: str) -> dict[str, object] | None:
        """The decision on ``request_id`` as published, if still kept whole."""
        return self.decided.get(request_id)

    def note(self, request_id: str) -> DecisionNote | None:
        """Whether (and how much) ``request_id`` was approved, if it is a recent decision."""
        if request_id in self.notes:
            return self.notes[request_id]
        whole = self.decided.get(request_id)  # a record written before notes were kept
        return None if whole is None else _note_of(whole)

    def with_decision(self, request_id: str, decision: dict[str, object]) -> CardLedger:
        """Remember ``decision`` whole (the newest ``SEALED_DECISIONS``) and as a note (the
        newest ``RECENT_DECISIONS``); a request redelivered after more newer payments of the
        same card is not answered again (see ``Provider.on_authorization``)."""
        notes = dict(self.notes)
        for rid, whole in self.decided.items():  # records written before notes were kept
            notes.setdefault(rid, _note_of(whole))
        decided, notes = remember(self.decided, notes, request_id, decision, _note_of(decision))
        return self.model_copy(update={"decided": decided, "notes": notes})


W = TypeVar("W")


def remember(decided: dict[str, W], notes: dict[str, DecisionNote], request_id: str,
             whole: W, note: DecisionNote) -> tuple[dict[str, W], dict[str, DecisionNote]]:
    """A card's decision memory with one more decision: the newest ``SEALED_DECISIONS``
    whole, notes of the newest ``RECENT_DECISIONS`` (the bank's rule; the audit's replay of
    the bank keeps the same memory, so it answers a redelivered request as the bank does)."""
    notes = {k: v for k, v in notes.items() if k != request_id}
    notes[request_id] = note
    decided = {**decided, request_id: whole}
    return (dict(list(decided.items())[-SEALED_DECISIONS:]),
            dict(list(notes.items())[-RECENT_DECISIONS:]))


def _note_of(decision: dict[str, object]) -> DecisionNote:
    return DecisionNote.model_validate(
        {"approved": decision["approved"], "amount": decision["amount"]})
