"""Re-derivation: replay a provider's request partition through its adapter, as the provider
app does (``agents.providers.app``), and give every output it would have published.

State is threaded exactly like the app: cards and accounts by PAN token, each card's decisions
as the bank remembers them (by request id), the hash chain and the open batch per partition
``p<N>``. Decisions are
deterministic (ids from inputs, time from the input event, Ed25519 deterministic), so the
encoded outputs must equal the recorded ones byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from agents.providers import cardstatus, decide
from agents.providers.base import ProviderAdapter
from agents.providers.issuer import HsmIssuer
from agents.providers.state import (
    Account,
    CardRecord,
    ChainHead,
    DecisionNote,
    OpenBatch,
    remember,
)
from agents.providers.transit import HsmOperator, Purse, TransitOperator
from audit.model import Record
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.signing import Verifier, verify_event
from cardbus.errors import CardBusError
from schemas.base import Event
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptReported
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import AuthorizationDecided, AuthorizationRequested, ReversalRequested
from schemas.transit import TransitLoadAborted, TransitLoadApplied, TransitLoadRequested
from streams import codec


class Output(NamedTuple):
    """One event the provider would have published, and the request record that caused it
    (a named tuple, like ``Fact``: it crosses from the worker processes)."""

    topic: str  # provider-results or settlements
    type: str
    event_id: str
    data: bytes  # the encoded event, as the provider app would publish it
    digest: str  # SHA-256 hex of ``data``
    source_offset: int
    source_timestamp_ms: int


@dataclass
class ProviderReplayer:
    """One provider partition's ledger, fed with its request events in offset order."""

    adapter: ProviderAdapter
    hsm: ProviderHsm
    platform: Verifier
    partition: int
    cards: dict[str, CardRecord] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    # per card, its decisions as the bank remembers them (agents.providers.state.remember):
    # the newest whole, notes of more; a request redelivered after its whole decision was
    # dropped gets no answer from the bank, nor here
    decided: dict[str, dict[str, AuthorizationDecided]] = field(default_factory=dict)
    notes: dict[str, dict[str, DecisionNote]] = field(default_factory=dict)
    chain: ChainHead | None = None
    batch: OpenBatch = field(default_factory=OpenBatch)
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    verified: int = 0  # platform signatures checked on the way (the scan leaves them to us)
    seal_failures: list[str] = field(default_factory=list)
    purses: dict[str, Purse] = field(default_factory=dict)  # a transit operator's, by card

    def __post_init__(self) -> None:
        self.crypto = _CountingIssuer(self.hsm, self.platform, self)
        self.operator = HsmOperator(self.hsm, self.crypto)
        pid = self.adapter.provider_id
        self.chain = self.chain or ChainHead(chain_id=f"{pid}.p{self.partition}")

    def apply(self, ev: Event, at_ms: int | None = None) -> list[tuple[str, Event]]:
        """The (topic, event) outputs of one request event; state updated. ``at_ms``: its
        record's broker time, the provider's "now" (card expiry is checked against it)."""
        try:
            return self._apply(ev, None if at_ms is None else
                               datetime.fromtimestamp(at_ms / 1000, UTC))
        except CardBusError:
            self.rejected += 1  # the app dead-letters it: no output
            return []

    def _apply(self, ev: Event, now: datetime | None) -> list[tuple[str, Event]]:
        own = self.hsm.verifier
        if isinstance(ev, AuthorizationRequested):
            token = ev.card.pan_token
            assert self.chain is not None
            whole = self.decided.get(token, {}).get(ev.event_id)
            if whole is None and ev.event_id in self.notes.get(token, {}):
                return []  # decided long ago, no longer kept whole: the bank does not answer
            known = token in self.cards and token in self.accounts
            result = self.adapter.authorize(
                ev, card=self.cards.get(token), account=self.accounts.get(token),
                chain=self.chain, batch=self.batch, processed=whole,
                crypto=self.crypto, now=now)
            if not result.duplicate:
                if result.card is not None:
                    self.cards[token] = result.card
                if result.account is not None:
                    self.accounts[token] = result.account
                self.chain, self.batch = result.chain, result.batch
                if known and result.card is not None and result.account is not None:
                    d = result.decision  # the bank remembers decisions on cards it holds
                    self.decided[token], self.notes[token] = remember(
                        self.decided.get(token, {}), self.notes.get(token, {}), ev.event_id,
                        d, DecisionNote(approved=d.approved, amount=d.amount))
            return [("provider-results", result.decision)]
        if isinstance(ev, ReversalRequested):
            self.crypto.verify_platform(ev)
            rev = self.adapter.reverse(ev, account=self.accounts.get(ev.pan_token),
                                       batch=self.batch,
                                       decision=self.notes.get(ev.pan_token, {}).get(
                                           ev.original_event_id),
                                       crypto=self.crypto)
            if rev.account is not None:
                self.accounts[ev.pan_token] = rev.account
            self.batch = rev.batch
            return [("provider-results", rev.answer)]
        if isinstance(ev, TransitLoadRequested | TransitLoadApplied | TransitLoadAborted):
            return self._load(ev)
        if isinstance(ev, CardIssued):
            verify_event(ev, lambda kid: own if kid == own.key_id else None)
            opened = decide.open_card(ev, self.cards.get(ev.pan_token))
            if opened is not None:
                self.cards[ev.pan_token], self.accounts[ev.pan_token] = opened
            return []
        if isinstance(ev, CardBlocked | CardUnblocked | IssuerScriptReported):
            self._card_status(ev)
            return []
        if isinstance(ev, SettlementCutoverRequested):
            verify_event(ev, lambda kid: own if kid == own.key_id else None)
            settled = self.adapter.close_batch(
                batch_id=f"{ev.batch_id}.p{self.partition}", closed_at_event=ev,
                batch=self.batch, crypto=self.crypto)
            self.batch = settled.batch
            return [("settlements", settled.closed)] if settled.closed is not None else []
        self.skipped[ev.type] = self.skipped.get(ev.type, 0) + 1
        return []

    def _load(self, ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted
              ) -> list[tuple[str, Event]]:
        """A transit operator's load step (MAC2, TAC, abort), on its purse record, as the
        provider app answers it (``agents.providers.handlers.ProviderHandlers.on_load``)."""
        adapter = self.adapter
        if not isinstance(adapter, TransitOperator):
            raise CardBusError(f"{ev.type}: {adapter.provider_id} is not a transit operator")
        answer = adapter.load_step(ev, self.purses.get(ev.card_token), self.operator)
        self.purses[ev.card_token] = answer.purse
        return [("provider-results", answer.event)]

    def _card_status(self, ev: CardBlocked | CardUnblocked | IssuerScriptReported) -> None:
        """A lost/stolen report, an unblock (the issuer's own), a script's result (the
        platform's): the card's state, as the provider app keeps it."""
        if isinstance(ev, IssuerScriptReported):
            self.crypto.verify_platform(ev)
        else:
            own = self.hsm.verifier
            verify_event(ev, lambda kid: own if kid == own.key_id else None)
        card = self.cards.get(ev.pan_token)
        if isinstance(ev, CardBlocked):
            new = cardstatus.block(ev, card)
        elif isinstance(ev, CardUnblocked):
            new = cardstatus.unblock(ev, card)
        else:
            new = cardstatus.script_reported(ev, card)
        if new is not None:
            self.cards[ev.pan_token] = new

    def ledger(self) -> dict[str, Any]:
        """The recomputed ledger of this partition: balances (holds of closed batches
        cleared), open holds, the open batch."""
        accounts = [decide.settle(a, self.batch.number) for a in self.accounts.values()]
        return {
            "accounts": len(accounts),
            "balance": sum(a.balance for a in accounts),
            "held": sum(h.amount for a in accounts for h in a.holds.values()),
            "holds": sum(len(a.holds) for a in accounts),
            "negative_available": sorted(a.account_id for a in accounts if a.available < 0),
            "open_batch_approvals": sum(t.approved_count for t in self.batch.totals.values()),
            "blocked_cards": sum(c.status == "blocked" for c in self.cards.values()),
            "reported_cards": sum(c.reported is not None for c in self.cards.values()),
        }


class _CountingIssuer(HsmIssuer):
    """``HsmIssuer`` that counts platform-signature checks and keeps their failures."""

    def __init__(self, hsm: ProviderHsm, platform: Verifier, owner: ProviderReplayer) -> None:
        super().__init__(hsm, platform)
        self.owner = owner

    def verify_platform(self, event: Event) -> None:
        try:
            super().verify_platform(event)
        except CardBusError as exc:
            self.owner.seal_failures.append(f"{event.type} {event.event_id}: {exc}")
            raise
        self.owner.verified += 1


def digest(event: Event) -> str:
    """SHA-256 hex of an event's encoded bytes (what the provider app publishes)."""
    return hashlib.sha256(codec.encode(event)).hexdigest()


@dataclass
class PartitionReplay:
    """Everything a re-derivation of one provider partition gave."""

    provider_id: str
    partition: int
    outputs: list[Output] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    verified: int = 0
    seal_failures: list[tuple[int, str]] = field(default_factory=list)


def replay_partition(adapter: ProviderAdapter, hsm: ProviderHsm, platform: Verifier,
                     partition: int, records: list[Record], *,
                     decode: Callable[[Record], Event | None] | None = None,
                     derived: dict[str, tuple[Event, str | None]] | None = None
                     ) -> PartitionReplay:
    """Replay ``records`` (one provider request partition, offset order).

    ``decode``: how a record becomes its event (None: it does not decode); the engine's scans
    the record on the way, so each request is decoded once. ``derived``: filled with every
    output by the SHA-256 hex of its bytes, with the decision hash of a decision (for the scan
    of the recorded outputs: ``audit.scan.scan``)."""
    replayer = ProviderReplayer(adapter, hsm, platform, partition)
    result = PartitionReplay(adapter.provider_id, partition)
    for rec in records:
        ev = (decode or _decode)(rec)
        if ev is None:
            replayer.rejected += 1
            continue
        failures = len(replayer.seal_failures)
        outputs = replayer.apply(ev, rec.timestamp_ms)
        result.seal_failures += [(rec.offset, r) for r in replayer.seal_failures[failures:]]
        for topic, out in outputs:
            data = codec.encode(out)
            digest = hashlib.sha256(data).hexdigest()
            result.outputs.append(Output(topic, out.type, out.event_id, data, digest,
                                         rec.offset, rec.timestamp_ms))
            if derived is not None:
                derived[digest] = (out, _chain_hash(replayer, out))
    result.ledger = replayer.ledger()
    result.skipped, result.rejected = replayer.skipped, replayer.rejected
    result.verified = replayer.verified
    return result


def _decode(rec: Record) -> Event | None:
    from audit.scan import decode_record

    try:
        return decode_record(rec)[0]
    except CardBusError:
        return None


def _chain_hash(replayer: ProviderReplayer, out: Event) -> str | None:
    """The hash the chain head keeps for ``out`` when it is the decision just chained (the
    one ``decide`` computed), else None."""
    head = replayer.chain
    if (isinstance(out, AuthorizationDecided) and head is not None
            and head.chain_id == out.chain_id and head.sequence == out.sequence):
        return head.last_hash
    return None


_HSMS: dict[tuple[str, str], ProviderHsm] = {}


def provider_hsm(provider_id: str, home: Path | None) -> ProviderHsm:
    """The provider's HSM from its local key store (cached per process)."""
    key = (provider_id, str(home))
    hsm = _HSMS.get(key)
    if hsm is None:
        from cardbus import ceremony

        hsm = _HSMS[key] = ceremony.provider_hsm(provider_id, home)
    return hsm
