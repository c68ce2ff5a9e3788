"""The trusted platform as a Faust app: wiring around ``agents.platform.handlers.Platform``.

Tables (rocksdb, changelog-backed):
- ``routes``, ``admissions``, ``terminals``, ``platform-keys``, ``card-policies``: every
  platform worker needs every provider route, admission, terminal record, key record and
  issuer's card policy (kept in full from their changelogs: streams.replica);
- ``pending`` (payment id -> the payment's one record: request digest, state, answer):
  co-partitioned with ``cardbus.payment-requests`` and ``cardbus.provider-results``, both
  keyed by the card's PAN token, so one worker owns a payment from request to answer.

Run with ``cardbus worker platform``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust

from agents.platform import decide
from agents.platform.handlers import Platform, PlatformRules, PlatformTables
from agents.platform.tablekeys import TableKeyStore
from cardbus import vault
from cardbus.crypto.hsm import PlatformHsm
from cardbus.logs import get_logger
from schemas.base import header
from schemas.clock import ClockTicked
from streams import codec
from streams.batching import Scoped, ScopedSend
from streams.faust_support import Bus, batches, consume, consume_batches, make_app
from streams.replica import Replica, Replicated
from streams.topics import (
    PAYMENT_REQUESTS,
    PLATFORM_TABLES,
    PROVIDER_RESULTS,
    TopicSettings,
    platform_app_id,
    topic_spec,
)

log = get_logger("platform")
APP_ID = platform_app_id()
BATCHED = (PAYMENT_REQUESTS.name, PROVIDER_RESULTS.name)
"""The hot topics, taken in batches (``streams.batching``); the others record by record."""


@dataclass(frozen=True)
class PlatformConfig:
    """How a platform worker runs."""

    bootstrap: str
    datadir: Path
    home: Path | None = None  # state folder (vault); None = the default
    timeout: timedelta = decide.DEFAULT_TIMEOUT
    load_timeout: timedelta = timedelta(seconds=60)
    tick_interval: float = 0.5
    guarantee: str = "at_least_once"
    app_id: str = APP_ID
    topics: TopicSettings | None = None  # replication of the topics Faust makes itself
    extra: dict[str, Any] = field(default_factory=dict)


def build(cfg: PlatformConfig) -> faust.App:
    """The platform's Faust app: tables, the handlers, the clock."""
    app = make_app(cfg.app_id, party="platform", bootstrap=cfg.bootstrap, datadir=cfg.datadir,
                   guarantee=cfg.guarantee, settings=cfg.topics, **cfg.extra)
    bus = Bus(app, "platform")
    # Faust wants a table's changelog to have its source topics' partition count.
    n = PLATFORM_TABLES

    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=n[name])

    def replicated(name: str) -> Replicated:
        return Replicated(table(name), f"{cfg.app_id}-{name}-changelog", n[name])

    # routes, admissions, terminals, key records and issuers' card policies: every worker needs
    # them all (see streams.replica); parked keys and registrations only the owner of the
    # provider's partition
    routes, admissions, terminals, key_table, policies = (
        replicated(t) for t in ("routes", "admissions", "terminals", "platform-keys",
                                "card-policies"))
    replica = Replica(cfg.bootstrap, [routes, admissions, terminals, key_table, policies],
                      party="platform")
    # the partitioned tables are seen through the running batch (each key written once per
    # batch); the replicated ones are not written on the hot paths
    tables = PlatformTables(routes=routes, admissions=admissions, terminals=terminals,
                            keys=key_table, parked=Scoped(table("parked-keys")),
                            parked_registrations=Scoped(table("parked-registrations")),
                            pending=Scoped(table("pending")), policies=policies)
    file_keys = vault.FileKeyStore("platform", cfg.home)
    keystore = TableKeyStore(vault.keyring("platform", cfg.home), file_keys.records(), key_table,
                             reload=lambda: vault.FileKeyStore("platform", cfg.home).records())
    platform = Platform(tables, PlatformHsm(keystore), keystore, ScopedSend(bus.send),
                        PlatformRules(timeout=cfg.timeout, load_timeout=cfg.load_timeout))

    def gated(handler: Any) -> Any:
        async def run(message: Any) -> None:
            await replica.ready.wait()  # routes, terminals and keys complete before acting
            await handler(message)
        return run

    runner = batches(bus)  # one lock: the batched agents share the pending table
    for name, handler in platform.handlers().items():
        _agent(app, raw_topic(app, name), bus, gated(handler), name,
               runner if name in BATCHED else None)

    @app.task
    async def follow_replica() -> None:
        await replica.run()

    requests_topic = raw_topic(app, PAYMENT_REQUESTS.name)

    @app.timer(cfg.tick_interval)
    async def clock() -> None:
        """A tick on each owned partition where a deadline has passed: timeouts are decided
        in the partition's order, so a replay decides them the same way; no deadline due, no
        tick (the payment trail is kept for years)."""
        now = datetime.now(UTC)
        for tp in list(app.consumer.assignment()):
            if tp.topic != PAYMENT_REQUESTS.name or not platform.due(tp.partition, now):
                continue
            tick = platform.hsm.sign_event(ClockTicked(
                **header("platform", f"clock-{tp.partition}", now,
                         event_id=f"tick-{tp.partition}-{now.timestamp():.3f}"),
                partition=tp.partition))  # sealed: terminals write this topic too
            await requests_topic.send(value=codec.encode(tick), partition=tp.partition)

    @app.timer(2.0)
    async def refresh_keys() -> None:
        keystore.refresh()

    # mode types its signal handlers with mypy_extensions argument kinds that no def matches
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _rebalanced(sender: Any, **_: Any) -> None:
        platform.forget_deadlines()

    del clock, refresh_keys, _rebalanced, follow_replica
    return app


def raw_topic(app: faust.App, name: str) -> Any:
    """A catalogue topic read and written as raw bytes (the handlers decode)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw",
                     partitions=topic_spec(name).partitions)


def _agent(app: faust.App, topic: Any, bus: Bus, handler: Any, name: str,
           runner: Any = None) -> None:
    async def agent(stream: Any) -> None:
        if runner is not None:
            await consume_batches(stream, bus, handler, runner)
        else:
            await consume(stream, bus, handler)

    agent.__name__ = agent.__qualname__ = "on_" + name.replace("cardbus.", "").replace("-", "_")
    app.agent(topic, name=f"platform.{agent.__name__}")(agent)
