"""A provider (bank or transit operator) as a Faust app: one app and consumer group per
provider, consuming only its own request topic; wiring around ``agents.providers.handlers``.

Tables (rocksdb, changelog-backed, co-partitioned with the request topic): see the handlers.

At start the provider (re-)publishes its registration and its key blocks (compacted topics, so
this is idempotent). Run with ``cardbus worker provider <id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import faust

from agents.providers.announce import card_policy, key_provisioning, registration
from agents.providers.base import ProviderAdapter
from agents.providers.handlers import Provider, ProviderTables
from agents.providers.issuer import HsmIssuer
from agents.providers.settle import batch_id_for, cutover_events
from cardbus import vault
from cardbus.crypto.hsm import ProviderHsm
from cardbus.logs import get_logger
from streams.batching import Scoped, ScopedSend
from streams.faust_support import Bus, batches, consume_batches, make_app
from streams.topics import (
    CARD_POLICIES,
    KEY_HISTORY,
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_TABLES,
    TopicSettings,
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
    topics: TopicSettings | None = None  # replication of the topics Faust makes itself
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def app_id(self) -> str:
        return provider_app_id(self.adapter.provider_id)


def build(cfg: ProviderConfig) -> faust.App:
    """The provider's Faust app: tables, the handlers, the announcement and cut-over timers."""
    adapter = cfg.adapter
    pid = adapter.provider_id
    app = make_app(cfg.app_id, party=f"provider-{pid}", bootstrap=cfg.bootstrap,
                   datadir=cfg.datadir,
                   guarantee=cfg.guarantee, settings=cfg.topics, **cfg.extra)
    bus = Bus(app, f"provider:{pid}")
    spec = provider_requests_spec(pid)
    # seen through the running batch: a partition's chain head and open batch (one record) are
    # written once per batch of decisions, not once per decision
    tables = ProviderTables(**{name: Scoped(app.Table(name, default=None, partitions=n))
                               for name, n in PROVIDER_TABLES.items()})
    hsm = ProviderHsm(pid, vault.FileKeyStore(f"provider-{pid}", cfg.home))
    provider = Provider(adapter, tables, hsm, HsmIssuer(hsm, vault.identity("platform", cfg.home)),
                        ScopedSend(bus.send))
    topic = app.topic(spec.name, key_serializer="raw", value_serializer="raw",
                      partitions=spec.partitions)

    runner = batches(bus)

    async def requests(stream: Any) -> None:
        await consume_batches(stream, bus, provider.on_request, runner)

    app.agent(topic, name=f"provider.{pid}.requests")(requests)

    @app.task
    async def announce() -> None:
        """Publish the registration and the key blocks (compacted: idempotent)."""
        now = datetime.now(UTC)
        registered = registration(adapter, hsm, now)
        await bus.send(KEY_HISTORY.name, pid, registered)  # first: kept in full for the audit
        await bus.send(PROVIDER_REGISTRATIONS.name, pid, registered)
        await bus.send(PROVIDER_KEYS.name, pid, key_provisioning(hsm, now))
        if adapter.kind == "bank":
            await bus.send(CARD_POLICIES.name, pid, card_policy(adapter, hsm, now))
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
        for partition, ev in cutover_events(hsm, batch_id, now, spec.partitions):
            await bus.send(spec.name, None, ev, partition=partition)
        log.info("daily cut-over sent", batch=batch_id)

    del announce, daily_cutover
    return app
