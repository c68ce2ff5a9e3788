"""A provider's handlers: one method per event its request topic carries, state passed in.

A provider (bank or transit operator) consumes only its own topic
``cardbus.provider.<id>.requests``; ``on_request`` dispatches by event type to
``on_authorization``, ``on_reversal``, ``on_card_issued``, ``on_card_status`` (lost, stolen,
unblocked, a script's result), ``on_cutover``, ``on_load`` and ``on_purse`` (a new e-purse for
the platform's card manager). Each
reads its tables, calls the adapter's pure decision and sends the answer through ``send``. No
Kafka and no Faust here: the app (``agents.providers.app``) passes its tables and a sender, a
unit test passes dicts and a list.

Tables (dict-like, JSON-ready values), co-partitioned with the request topic:
``ledger`` (PAN token -> the card's record, account and recent decisions, one record so a crash
never separates a decision from the hold it placed), ``partition`` (partition -> its hash-chain
head and open settlement batch, one record), ``purses`` (transit card -> purse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel

from agents.providers import cardstatus, decide, purses
from agents.providers.base import ProviderAdapter
from agents.providers.issuer import HsmIssuer
from agents.providers.state import CardLedger, ChainHead, PartitionState
from agents.providers.transit import HsmOperator, Purse, TransitOperator
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.signing import verify_event
from cardbus.errors import DecodeError
from cardbus.logs import bind_correlation, get_logger
from schemas.base import Event
from schemas.cardmgmt import PursePersonalisationRequested
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptReported
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import AuthorizationDecided, AuthorizationRequested, ReversalRequested
from schemas.transit import TransitLoadAborted, TransitLoadApplied, TransitLoadRequested
from streams import codec
from streams.records import Record, Send, Table
from streams.topics import PROVIDER_RESULTS, SETTLEMENTS, provider_requests_topic

log = get_logger("provider")

M = TypeVar("M", bound=BaseModel)


@dataclass
class ProviderTables:
    """A provider's state (Faust tables in the app, dicts in unit tests)."""

    ledger: Table = field(default_factory=dict)
    partition: Table = field(default_factory=dict)
    purses: Table = field(default_factory=dict)


def _load(table: Table, key: str, model: type[M]) -> M | None:
    raw = table.get(key)
    return model.model_validate(raw) if raw else None


def _store(table: Table, key: str, value: BaseModel) -> None:
    table[key] = value.model_dump(mode="json")


def part_key(partition: int) -> str:
    """The table key of a partition's chain head and open batch."""
    return f"p{partition}"


def load_partition(table: Table, provider_id: str, partition: int) -> PartitionState:
    """A partition's chain head and open batch (a new chain and an empty batch at first)."""
    pk = part_key(partition)
    return (_load(table, pk, PartitionState)
            or PartitionState(chain=ChainHead(chain_id=f"{provider_id}.{pk}")))


class Provider:
    """One provider's handlers over its tables."""

    def __init__(self, adapter: ProviderAdapter, tables: ProviderTables, hsm: ProviderHsm,
                 crypto: HsmIssuer, send: Send) -> None:
        self.adapter = adapter
        self.pid = adapter.provider_id
        self.t = tables
        self.hsm = hsm
        self.crypto = crypto
        self.operator = HsmOperator(hsm, crypto)
        self.purses = purses.HsmPurses(hsm, crypto)
        self.send = send
        self.topic = provider_requests_topic(self.pid)

    async def on_request(self, record: Record) -> None:
        """The provider's request topic: dispatch by event type."""
        ev = codec.decode(self.topic, record.value)
        if isinstance(ev, AuthorizationRequested):
            await self.on_authorization(ev, record.partition,
                                        now=datetime.fromtimestamp(record.timestamp, UTC))
        elif isinstance(ev, ReversalRequested):
            await self.on_reversal(ev, record.partition)
        elif isinstance(ev, CardIssued):
            self.on_card_issued(ev)
        elif isinstance(ev, SettlementCutoverRequested):
            await self.on_cutover(ev, record.partition)
        elif isinstance(ev, TransitLoadRequested | TransitLoadApplied | TransitLoadAborted):
            await self.on_load(ev)
        elif isinstance(ev, CardBlocked | CardUnblocked | IssuerScriptReported):
            self.on_card_status(ev)
        elif isinstance(ev, PursePersonalisationRequested):
            await self.on_purse(ev)
        else:
            raise DecodeError(f"type: {ev.type} is not handled by a provider", field="type")

    async def on_authorization(self, req: AuthorizationRequested, partition: int, *,
                               now: datetime) -> None:
        """Decide; the card's record, the chain head and the batch are written together.
        ``now``: the provider's own time for the request (its record's broker time, with
        LogAppendTime the broker's clock): card expiry is checked against it."""
        token = req.card.pan_token
        entry = _load(self.t.ledger, token, CardLedger)
        done = entry.decision(req.event_id) if entry else None
        if done is None and entry is not None and entry.note(req.event_id) is not None:
            # decided, but no longer kept whole (the card made more payments since): never
            # decide twice; unanswered, the platform's timeout declines and reverses it
            with bind_correlation(req.correlation_id, provider=self.pid):
                log.warning("redelivered request decided long ago: not answered again",
                            masked_pan=req.card.masked_pan)
            return
        part = load_partition(self.t.partition, self.pid, partition)
        with bind_correlation(req.correlation_id, provider=self.pid):
            result = self.adapter.authorize(
                req, card=entry.card if entry else None,
                account=entry.account if entry else None,
                chain=part.chain, batch=part.batch,
                processed=AuthorizationDecided.model_validate(done) if done else None,
                crypto=self.crypto, now=now)
            if not result.duplicate:
                if entry is not None and result.card is not None and result.account is not None:
                    _store(self.t.ledger, token, entry.model_copy(update={
                        "card": result.card, "account": result.account,
                    }).with_decision(req.event_id, result.decision.model_dump(mode="json")))
                _store(self.t.partition, part_key(partition),
                       PartitionState(chain=result.chain, batch=result.batch))
            d = result.decision
            (log.debug if d.approved and not result.duplicate else log.info)(
                "authorization decided", code=d.response_code, approved=d.approved,
                duplicate=result.duplicate, masked_pan=req.card.masked_pan)
            await self.send(PROVIDER_RESULTS.name, token, d)

    async def on_reversal(self, rev: ReversalRequested, partition: int) -> None:
        """Release a hold (or credit back a cleared approval), sealed by the platform."""
        platform = self.crypto.platform
        verify_event(rev, lambda kid: platform if kid == platform.key_id else None)
        token = rev.pan_token
        entry = _load(self.t.ledger, token, CardLedger)
        part = load_partition(self.t.partition, self.pid, partition)
        with bind_correlation(rev.correlation_id, provider=self.pid):
            result = self.adapter.reverse(
                rev, account=entry.account if entry else None, batch=part.batch,
                decision=entry.note(rev.original_event_id) if entry else None,
                crypto=self.crypto)
            if entry is not None and result.account is not None:
                _store(self.t.ledger, token, entry.model_copy(update={"account": result.account}))
            _store(self.t.partition, part_key(partition),
                   part.model_copy(update={"batch": result.batch}))
            log.info("reversal applied", reversed=result.answer.reversed, reason=rev.reason)
            await self.send(PROVIDER_RESULTS.name, token, result.answer)

    def _own_seal(self, ev: Event) -> None:
        verifier = self.hsm.verifier
        verify_event(ev, lambda kid: verifier if kid == verifier.key_id else None)

    def on_card_issued(self, ev: CardIssued) -> None:
        """Open a card's record and account (the provider's own sealed event)."""
        self._own_seal(ev)
        existing = _load(self.t.ledger, ev.pan_token, CardLedger)
        opened = decide.open_card(ev, existing.card if existing else None)
        if opened is not None:
            _store(self.t.ledger, ev.pan_token, CardLedger(card=opened[0], account=opened[1]))
            log.info("card opened", masked_pan=ev.masked_pan, balance=ev.opening_balance)

    def on_card_status(self, ev: CardBlocked | CardUnblocked | IssuerScriptReported) -> None:
        """A card reported lost or stolen, unblocked (the provider's own sealed events), or
        what the card answered to an issuer script (the platform's)."""
        if isinstance(ev, IssuerScriptReported):
            self.crypto.verify_platform(ev)
        else:
            self._own_seal(ev)
        entry = _load(self.t.ledger, ev.pan_token, CardLedger)
        card = entry.card if entry else None
        if isinstance(ev, CardBlocked):
            new = cardstatus.block(ev, card)
        elif isinstance(ev, CardUnblocked):
            new = cardstatus.unblock(ev, card)
        else:
            new = cardstatus.script_reported(ev, card)
        if entry is not None and new is not None:
            _store(self.t.ledger, ev.pan_token, entry.model_copy(update={"card": new}))
        log.info("card status", step=ev.type, changed=new is not None,
                 masked_pan=card.masked_pan if card else None)

    async def on_cutover(self, ev: SettlementCutoverRequested, partition: int) -> None:
        """Close this partition's settlement batch (the provider's own sealed event)."""
        self._own_seal(ev)
        part = load_partition(self.t.partition, self.pid, partition)
        batch = part.batch
        settled = self.adapter.close_batch(batch_id=f"{ev.batch_id}.p{partition}",
                                           closed_at_event=ev, batch=batch, crypto=self.crypto)
        _store(self.t.partition, part_key(partition),
               part.model_copy(update={"batch": settled.batch}))
        if settled.closed is not None:
            log.info("batch closed", batch=settled.closed.batch_id,
                     approved=sum(t.approved_count for t in batch.totals.values()))
            await self.send(SETTLEMENTS.name, self.pid, settled.closed)

    async def on_load(self, ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted
                      ) -> None:
        """A transit operator's load steps: authorize (MAC2), confirm (TAC), abort."""
        adapter = self.adapter
        if not isinstance(adapter, TransitOperator):
            raise DecodeError(f"type: {ev.type}: {self.pid} is not a transit operator",
                              field="type")
        purse = _load(self.t.purses, ev.card_token, Purse)
        with bind_correlation(ev.correlation_id, provider=self.pid):
            answer = adapter.load_step(ev, purse, self.operator)
            _store(self.t.purses, ev.card_token, answer.purse)
            log.info("transit load", step=ev.type, answer=answer.event.type,
                     confirmed=getattr(answer.event, "confirmed", None))
            await self.send(PROVIDER_RESULTS.name, ev.funding_pan_token, answer.event)

    async def on_purse(self, ev: PursePersonalisationRequested) -> None:
        """A transit operator's new e-purse for the platform to install (keyed by session)."""
        if self.adapter.kind != "transit":
            raise DecodeError(f"type: {ev.type}: {self.pid} is not a transit operator",
                              field="type")
        number = purses.purse_number(self.adapter.card_bin, ev.event_id)
        known = _load(self.t.purses, self.hsm.transit_card_token(number), Purse)
        with bind_correlation(ev.correlation_id, provider=self.pid):
            done = purses.prepare(ev, known, card_bin=self.adapter.card_bin,
                                  label=self.adapter.label, crypto=self.purses)
            if done.purse is not None:
                _store(self.t.purses, done.answer.card_token, done.purse)
            log.info("purse prepared for card management", issuer=ev.issuer_id,
                     repeated=done.purse is None)
            await self.send(PROVIDER_RESULTS.name, ev.correlation_id, done.answer)
