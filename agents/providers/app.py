"""A provider (bank or transit operator) as a Faust app: one app and consumer group per
provider, consuming only its own request topic, thin agents around the adapter's decisions.

Tables (rocksdb, changelog-backed, co-partitioned with the request topic, keyed by PAN token):
``ledger`` (PAN token -> the card's record, account and recent decisions, one record so a crash
never separates a decision from the hold it placed),
``chain`` (partition -> hash-chain head), ``batch`` (partition -> open settlement batch).

At start the provider (re-)publishes its registration and its key blocks (compacted topics, so
this is idempotent). Run with ``cardbus worker provider <id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import faust

from agents.providers import decide
from agents.providers.announce import key_provisioning, registration
from agents.providers.base import ProviderAdapter
from agents.providers.issuer import HsmIssuer
from agents.providers.settle import batch_id_for, cutover_events
from agents.providers.state import CardLedger, ChainHead, OpenBatch
from agents.providers.transit import HsmOperator, Purse, TransitOperator
from cardbus import vault
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.signing import verify_event
from cardbus.errors import DecodeError
from cardbus.logs import bind_correlation, get_logger
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import AuthorizationDecided, AuthorizationRequested, ReversalRequested
from schemas.transit import TransitLoadAborted, TransitLoadApplied, TransitLoadRequested
from streams import codec
from streams.faust_support import Bus, consume, make_app
from streams.topics import (
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_RESULTS,
    PROVIDER_TABLES,
    SETTLEMENTS,
    provider_app_id,
    provider_requests_spec,
)

log = get_logger("provider")


@dataclass(frozen=True)
class ProviderConfig:
    """How one provider worker runs."""

    adapter: ProviderAdapter
    bootstrap: str
    datadir: Path
    home: Path | None = None
    guarantee: str = "at_least_once"
    cutover: time | None = None  # daily settlement cut-over (UTC), if any
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def app_id(self) -> str:
        return provider_app_id(self.adapter.provider_id)


def build(cfg: ProviderConfig) -> faust.App:
    """The provider's Faust app."""
    adapter = cfg.adapter
    pid = adapter.provider_id
    app = make_app(cfg.app_id, bootstrap=cfg.bootstrap, datadir=cfg.datadir,
                   guarantee=cfg.guarantee, **cfg.extra)
    bus = Bus(app, f"provider:{pid}")
    spec = provider_requests_spec(pid)
    n = spec.partitions
    t = PROVIDER_TABLES
    ledgers = app.Table("ledger", default=None, partitions=t["ledger"])
    chain = app.Table("chain", default=None, partitions=t["chain"])
    batches = app.Table("batch", default=None, partitions=t["batch"])
    purses = app.Table("purses", default=None, partitions=t["purses"])
    hsm = ProviderHsm(pid, vault.FileKeyStore(f"provider-{pid}", cfg.home))
    crypto = HsmIssuer(hsm, vault.identity("platform", cfg.home))
    operator = HsmOperator(hsm, crypto)

    def load(table: Any, key: str, model: Any) -> Any:
        raw = table.get(key)
        return model.model_validate(raw) if raw else None

    def store(table: Any, key: str, value: Any) -> None:
        table[key] = value.model_dump(mode="json")

    def part_key(message: Any) -> str:
        return f"p{message.partition}"

    async def on_message(message: Any) -> None:
        ev = codec.decode(spec.name, message.value)
        if isinstance(ev, AuthorizationRequested):
            await on_authorization(ev, message)
        elif isinstance(ev, ReversalRequested):
            await on_reversal(ev, message)
        elif isinstance(ev, CardIssued):
            on_card_issued(ev)
        elif isinstance(ev, SettlementCutoverRequested):
            await on_cutover(ev, message)
        elif isinstance(ev, TransitLoadRequested | TransitLoadApplied | TransitLoadAborted):
            await on_load(ev)
        else:
            raise DecodeError(f"type: {ev.type} is not handled by a provider", field="type")

    async def on_load(ev: TransitLoadRequested | TransitLoadApplied | TransitLoadAborted
                      ) -> None:
        if not isinstance(adapter, TransitOperator):
            raise DecodeError(f"type: {ev.type}: {pid} is not a transit operator", field="type")
        purse = load(purses, ev.card_serial, Purse)
        with bind_correlation(ev.correlation_id, provider=pid):
            if isinstance(ev, TransitLoadRequested):
                answer = adapter.authorize_load(ev, purse, operator)
            elif isinstance(ev, TransitLoadApplied):
                answer = adapter.confirm_load(ev, purse, operator)
            else:
                answer = adapter.abort_load(ev, purse, operator)
            store(purses, ev.card_serial, answer.purse)
            log.info("transit load", step=ev.type, answer=answer.event.type,
                     confirmed=getattr(answer.event, "confirmed", None))
            await bus.send(PROVIDER_RESULTS.name, ev.funding_pan_token, answer.event)

    async def on_authorization(req: AuthorizationRequested, message: Any) -> None:
        token = req.card.pan_token
        entry = load(ledgers, token, CardLedger)
        done = entry.decision(req.event_id) if entry else None
        with bind_correlation(req.correlation_id, provider=pid):
            result = adapter.authorize(
                req, card=entry.card if entry else None,
                account=entry.account if entry else None,
                chain=load(chain, part_key(message), ChainHead)
                or ChainHead(chain_id=f"{pid}.{part_key(message)}"),
                batch=load(batches, part_key(message), OpenBatch) or OpenBatch(),
                processed=AuthorizationDecided.model_validate(done) if done else None,
                crypto=crypto)
            if not result.duplicate:
                if entry is not None and result.card is not None and result.account is not None:
                    store(ledgers, token, CardLedger(
                        card=result.card, account=result.account, decided=entry.decided,
                    ).with_decision(req.event_id, result.decision.model_dump(mode="json")))
                store(chain, part_key(message), result.chain)
                store(batches, part_key(message), result.batch)
            d = result.decision
            (log.debug if d.approved and not result.duplicate else log.info)(
                "authorization decided", code=d.response_code, approved=d.approved,
                duplicate=result.duplicate, masked_pan=req.card.masked_pan)
            await bus.send(PROVIDER_RESULTS.name, token, d)

    async def on_reversal(rev: ReversalRequested, message: Any) -> None:
        verify_event(rev, lambda kid: crypto.platform if kid == crypto.platform.key_id else None)
        token = rev.pan_token
        entry = load(ledgers, token, CardLedger)
        done = entry.decision(rev.original_event_id) if entry else None
        with bind_correlation(rev.correlation_id, provider=pid):
            result = adapter.reverse(
                rev, account=entry.account if entry else None,
                batch=load(batches, part_key(message), OpenBatch) or OpenBatch(),
                decision=AuthorizationDecided.model_validate(done) if done else None,
                crypto=crypto)
            if entry is not None and result.account is not None:
                store(ledgers, token, entry.model_copy(update={"account": result.account}))
            store(batches, part_key(message), result.batch)
            log.info("reversal applied", reversed=result.answer.reversed, reason=rev.reason)
            await bus.send(PROVIDER_RESULTS.name, token, result.answer)

    def on_card_issued(ev: CardIssued) -> None:
        verify_event(ev, lambda kid: hsm.verifier if kid == hsm.verifier.key_id else None)
        existing = load(ledgers, ev.pan_token, CardLedger)
        opened = decide.open_card(ev, existing.card if existing else None)
        if opened is not None:
            store(ledgers, ev.pan_token, CardLedger(card=opened[0], account=opened[1]))
            log.info("card opened", masked_pan=ev.masked_pan, balance=ev.opening_balance)

    async def on_cutover(ev: SettlementCutoverRequested, message: Any) -> None:
        verify_event(ev, lambda kid: hsm.verifier if kid == hsm.verifier.key_id else None)
        batch = load(batches, part_key(message), OpenBatch) or OpenBatch()
        settled = adapter.close_batch(batch_id=f"{ev.batch_id}.p{message.partition}",
                                      closed_at_event=ev, batch=batch, crypto=crypto)
        store(batches, part_key(message), settled.batch)
        if settled.closed is not None:
            log.info("batch closed", batch=settled.closed.batch_id,
                     approved=sum(t.approved_count for t in batch.totals.values()))
            await bus.send(SETTLEMENTS.name, pid, settled.closed)

    topic = app.topic(spec.name, key_serializer="raw", value_serializer="raw", partitions=n)

    async def requests(stream: Any) -> None:
        await consume(stream, bus, on_message)

    app.agent(topic, name=f"provider.{pid}.requests")(requests)

    @app.task
    async def announce() -> None:
        """Publish the registration and the key blocks (compacted: idempotent)."""
        now = datetime.now(UTC)
        await bus.send(PROVIDER_REGISTRATIONS.name, pid, registration(adapter, hsm, now))
        await bus.send(PROVIDER_KEYS.name, pid, key_provisioning(hsm, now))
        log.info("provider announced", provider=pid)

    last_cut: dict[str, datetime] = {}

    @app.timer(20.0)
    async def daily_cutover() -> None:
        """At the configured time each day, the worker owning partition 0 closes the batch."""
        if cfg.cutover is None:
            return
        now = datetime.now(UTC)
        due = datetime.combine(now.date(), cfg.cutover, UTC)
        if now < due or last_cut.get("at", now - timedelta(days=2)) >= due:
            return
        if not any(tp.topic == spec.name and tp.partition == 0
                   for tp in app.consumer.assignment()):
            return
        last_cut["at"] = now
        batch_id = batch_id_for(pid, due)
        for partition, ev in cutover_events(hsm, batch_id, now, n):
            await bus.send(spec.name, None, ev, partition=partition)
        log.info("daily cut-over sent", batch=batch_id)

    del announce, daily_cutover
    return app

