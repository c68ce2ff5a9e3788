"""The trusted platform as a Faust app: thin agents around ``agents.platform.decide``.

Tables (rocksdb, changelog-backed):
- ``routes``, ``terminals``, ``platform-keys``: global tables (every platform worker needs every
  provider route, terminal record and key record);
- ``pending`` (payment id -> in-flight payment) and ``outcomes`` (request event id -> the answer
  sent): co-partitioned with ``cardbus.payment-requests`` and ``cardbus.provider-results``, both
  keyed by the card's PAN token, so one worker owns a payment from request to answer.

Run with ``cardbus worker platform``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust

from agents.platform import decide, transit
from agents.platform.tablekeys import TableKeyStore
from cardbus import vault
from cardbus.crypto.hsm import PlatformHsm
from cardbus.logs import bind_correlation, get_logger
from schemas.clock import ClockTicked
from schemas.payments import (
    AuthorizationDecided,
    PaymentCompleted,
    PaymentRequested,
    ReversalCompleted,
)
from schemas.providers import ProviderKeysProvisioned, ProviderRegistered
from schemas.terminals import TerminalEnrolled, TerminalStatusChanged
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)
from streams import codec
from streams.faust_support import Bus, consume, make_app
from streams.replica import Replica, Replicated
from streams.topics import (
    PAYMENT_REQUESTS,
    PLATFORM_TABLES,
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_RESULTS,
    TERMINAL_KEYS,
    TERMINAL_RESULTS,
    TERMINAL_STATUS,
    TERMINALS,
    TRANSIT_LOADS,
    platform_app_id,
    provider_requests_topic,
)

log = get_logger("platform")
APP_ID = platform_app_id()
TIMED_OUT_KEEP = timedelta(minutes=10)


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
    extra: dict[str, Any] = field(default_factory=dict)


def _at(message: Any) -> datetime:
    """The broker timestamp of a message: the platform's notion of when it arrived."""
    return datetime.fromtimestamp(message.timestamp, UTC)


def build(cfg: PlatformConfig) -> faust.App:
    """The platform's Faust app."""
    app = make_app(cfg.app_id, bootstrap=cfg.bootstrap, datadir=cfg.datadir,
                   guarantee=cfg.guarantee, **cfg.extra)
    bus = Bus(app, "platform")
    # Faust wants a table's changelog to have its source topics' partition count.
    n = PLATFORM_TABLES
    # routes, terminals and key records: every worker needs them all (see streams.replica);
    # parked keys are only read by the owner of the provider's partition
    parked = app.Table("parked-keys", default=None, partitions=n["parked-keys"])

    def replicated(name: str) -> Replicated:
        table = app.Table(name, default=None, partitions=n[name])
        return Replicated(table, f"{cfg.app_id}-{name}-changelog", n[name])

    routes, terminals, key_table = (replicated(t) for t in ("routes", "terminals",
                                                             "platform-keys"))
    replica = Replica(cfg.bootstrap, [routes, terminals, key_table])
    pending = app.Table("pending", default=None, partitions=n["pending"])
    outcomes = app.Table("outcomes", default=None, partitions=n["outcomes"])
    partitions = PAYMENT_REQUESTS.partitions
    file_keys = vault.FileKeyStore("platform", cfg.home)
    keystore = TableKeyStore(vault.keyring("platform", cfg.home), file_keys.records(), key_table,
                             reload=lambda: vault.FileKeyStore("platform", cfg.home).records())
    hsm = PlatformHsm(keystore)
    # partition -> payment id -> deadline: an in-memory index over ``pending`` for the ticks
    deadlines: dict[int, dict[str, datetime]] = {}

    def all_routes() -> dict[str, decide.Route]:
        return {k: decide.Route.model_validate(v) for k, v in routes.items() if v}

    def terminal(tid: str) -> decide.TerminalRecord | None:
        raw = terminals.get(tid)
        return decide.TerminalRecord.model_validate(raw) if raw else None

    def save_keys() -> None:
        for k, v in keystore.flush():
            key_table[k] = v

    async def emit(out: decide.Out) -> None:
        for role, key, event in out.events:
            if role == "terminal":
                await bus.send(TERMINAL_RESULTS.name, key, event)
            elif role == "terminal-keys":
                await bus.send(TERMINAL_KEYS.name, key, event)
            else:
                await bus.send(provider_requests_topic(role.split(":", 1)[1]), key, event)

    async def reissue_terminal_keys(cause: Any) -> None:
        current = all_routes()
        out = decide.Out()
        for tid, raw in list(terminals.items()):
            if raw:
                record = decide.TerminalRecord.model_validate(raw)
                out.add("terminal-keys", tid,
                        decide.keys_event(record, current, hsm, cause=cause))
        await emit(out)

    # -- providers ---------------------------------------------------------------------------

    async def on_provider(message: Any) -> None:
        ev = codec.decode_as(PROVIDER_REGISTRATIONS.name, message.value, ProviderRegistered)
        raw = routes.get(ev.provider_id)
        route = decide.register_provider(ev, decide.Route.model_validate(raw) if raw else None)
        routes[ev.provider_id] = route.model_dump(mode="json")
        log.info("provider registered", provider=ev.provider_id, kind=ev.kind)
        waiting = parked.get(ev.provider_id)
        if waiting:  # its keys arrived first (another topic): take them now
            del parked[ev.provider_id]
            provision(ProviderKeysProvisioned.model_validate(waiting), route)
        await reissue_terminal_keys(ev)

    def provision(ev: ProviderKeysProvisioned, route: decide.Route) -> None:
        route = decide.provision_keys(ev, route, hsm)
        save_keys()
        routes[ev.provider_id] = route.model_dump(mode="json")
        log.info("provider keys stored", provider=ev.provider_id, key_count=len(ev.keys))

    async def on_provider_keys(message: Any) -> None:
        ev = codec.decode_as(PROVIDER_KEYS.name, message.value, ProviderKeysProvisioned)
        raw = routes.get(ev.provider_id)
        if not raw:  # registration not seen yet: keep the keys until it is
            parked[ev.provider_id] = ev.model_dump(mode="json")
            log.info("provider keys parked until registration", provider=ev.provider_id)
            return
        provision(ev, decide.Route.model_validate(raw))

    # -- terminals ---------------------------------------------------------------------------

    async def on_enrollment(message: Any) -> None:
        ev = codec.decode_as(TERMINALS.name, message.value, TerminalEnrolled)
        record, keys = decide.enroll_terminal(ev, terminal(ev.terminal_id), hsm, all_routes())
        save_keys()
        terminals[ev.terminal_id] = record.model_dump(mode="json")
        await bus.send(TERMINAL_KEYS.name, ev.terminal_id, keys)
        log.info("terminal enrolled", terminal=ev.terminal_id)

    async def on_status(message: Any) -> None:
        ev = codec.decode_as(TERMINAL_STATUS.name, message.value, TerminalStatusChanged)
        record = decide.change_status(ev, terminal(ev.terminal_id), hsm.verifier)
        terminals[ev.terminal_id] = record.model_dump(mode="json")
        log.info("terminal status", terminal=ev.terminal_id, status=ev.status)

    # -- payments ----------------------------------------------------------------------------

    def track(entry: decide.Pending, partition: int) -> None:
        pending[entry.payment_id] = {**entry.model_dump(mode="json"), "partition": partition}
        if entry.waiting:
            deadlines.setdefault(partition, {})[entry.payment_id] = entry.deadline
        else:
            deadlines.get(partition, {}).pop(entry.payment_id, None)

    def load_pending(payment_id: str) -> tuple[decide.Pending | None, int | None]:
        raw = pending.get(payment_id)
        if not raw:
            return None, None
        raw = dict(raw)
        part = raw.pop("partition", None)
        return decide.Pending.model_validate(raw), part

    async def on_request(message: Any) -> None:
        ev = codec.decode_as(PAYMENT_REQUESTS.name, message.value,
                             (PaymentRequested, ClockTicked))
        if isinstance(ev, ClockTicked):
            await on_tick(ev, message.partition)
            return
        with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
            answered = outcomes.get(ev.event_id)
            if answered:  # a redelivered request: the same answer again
                await bus.send(TERMINAL_RESULTS.name, ev.terminal_id,
                               PaymentCompleted.model_validate(answered))
                return
            if pending.get(ev.correlation_id):
                return  # already in flight
            entry, out = decide.request_payment(
                ev, received_at=_at(message), terminal=terminal(ev.terminal_id),
                routes=all_routes(), hsm=hsm, timeout=cfg.timeout)
            if entry is not None:
                track(entry, message.partition)
                log.debug("payment routed", provider=entry.provider_id,
                         masked_pan=entry.masked_pan, amount=entry.amount.amount)
            for _role, _key, event in out.events:
                if isinstance(event, PaymentCompleted):
                    outcomes[ev.event_id] = event.model_dump(mode="json")
                    log.info("payment declined", code=event.response_code)
            await emit(out)

    async def on_tick(tick: ClockTicked, partition: int) -> None:
        index = deadlines.get(partition)
        if index is None:  # first tick since (re)assignment: rebuild from the table
            index = deadlines[partition] = {}
            for pid, raw in list(pending.items()):
                if raw and raw.get("partition") == partition:
                    entry, _ = load_pending(pid)
                    if entry is not None and entry.waiting:
                        index[pid] = entry.deadline
        now = tick.occurred_at
        for payment_id, deadline in sorted(index.items(), key=lambda kv: kv[1]):
            if deadline > now:
                break
            entry, _ = load_pending(payment_id)
            if entry is None:
                index.pop(payment_id, None)
                continue
            with bind_correlation(payment_id):
                expired, out = decide.expire(entry, now=now, hsm=hsm)
                track(expired, partition)
                for _role, _key, event in out.events:
                    if isinstance(event, PaymentCompleted):
                        outcomes[entry.request_event_id] = event.model_dump(mode="json")
                log.warning("payment timed out", provider=entry.provider_id)
                await emit(out)

    async def on_result(message: Any) -> None:
        ev = codec.decode_as(PROVIDER_RESULTS.name, message.value,
                             (AuthorizationDecided, ReversalCompleted, TransitLoadAuthorized,
                              TransitLoadConfirmed))
        raw_route = (routes.get(ev.provider_id)
                     if isinstance(ev, (AuthorizationDecided, ReversalCompleted)) else None)
        route = decide.Route.model_validate(raw_route) if raw_route else None
        if isinstance(ev, AuthorizationDecided):
            with bind_correlation(ev.correlation_id, provider=ev.provider_id):
                entry, part = load_pending(ev.correlation_id)
                new, out = decide.take_decision(ev, pending=entry, route=route, hsm=hsm,
                                                load_timeout=cfg.load_timeout)
                if new is not None and part is not None:
                    track(new, part)
                for _role, _key, event in out.events:
                    if isinstance(event, PaymentCompleted) and entry is not None:
                        outcomes[entry.request_event_id] = event.model_dump(mode="json")
                        # the bus is the record of every payment: approvals at debug level
                        (log.debug if event.approved else log.info)(
                            "payment answered", code=event.response_code)
                await emit(out)
        elif isinstance(ev, ReversalCompleted):
            decide.check_provider_seal(ev, route)
            log.info("reversal completed", provider=ev.provider_id, reversed=ev.reversed,
                     correlation_id=ev.correlation_id)
        else:  # the transit operator's answers
            raw_op = routes.get(ev.operator_id)
            with bind_correlation(ev.correlation_id, provider=ev.operator_id):
                entry, part = load_pending(ev.correlation_id)
                new, out = transit.operator_answer(
                    ev, pending=entry, route=decide.Route.model_validate(raw_op) if raw_op
                    else None, hsm=hsm)
                if new is not None and part is not None:
                    track(new, part)
                log.info("transit load answer", step=ev.type,
                         stage=new.load_stage if new else None)
                await emit(out)

    async def on_load(message: Any) -> None:
        ev = codec.decode_as(TRANSIT_LOADS.name, message.value,
                             (TransitLoadRequested, TransitLoadApplied, TransitLoadAborted))
        with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
            entry, part = load_pending(ev.correlation_id)
            if isinstance(ev, TransitLoadRequested):
                new, out = transit.request_load(ev, pending=entry, routes=all_routes(),
                                                hsm=hsm, received_at=_at(message))
            else:
                new, out = transit.card_report(ev, pending=entry, hsm=hsm,
                                               received_at=_at(message))
            if part is not None:
                track(new, part)
            log.info("transit load step", step=ev.type, stage=new.load_stage)
            await emit(out)

    # -- wiring ------------------------------------------------------------------------------

    def raw_topic(name: str, partitions: int) -> Any:
        return app.topic(name, key_serializer="raw", value_serializer="raw",
                         partitions=partitions)

    def gated(handler: Any) -> Any:
        async def run(message: Any) -> None:
            await replica.ready.wait()  # routes, terminals and keys complete before acting
            await handler(message)
        return run

    for spec, handler in ((PROVIDER_REGISTRATIONS, on_provider), (PROVIDER_KEYS, on_provider_keys),
                          (TERMINALS, on_enrollment), (TERMINAL_STATUS, on_status),
                          (PAYMENT_REQUESTS, on_request), (PROVIDER_RESULTS, on_result),
                          (TRANSIT_LOADS, on_load)):
        _agent(app, raw_topic(spec.name, spec.partitions), bus, gated(handler), spec.name)

    @app.task
    async def follow_replica() -> None:
        await replica.run()

    requests_topic = raw_topic(PAYMENT_REQUESTS.name, partitions)

    @app.timer(cfg.tick_interval)
    async def clock() -> None:
        now = datetime.now(UTC)
        for tp in list(app.consumer.assignment()):
            if tp.topic != PAYMENT_REQUESTS.name:
                continue
            tick = ClockTicked(event_id=f"tick-{tp.partition}-{now.timestamp():.3f}",
                               correlation_id=f"clock-{tp.partition}", occurred_at=now,
                               producer="platform", partition=tp.partition)
            await requests_topic.send(value=codec.encode(tick), partition=tp.partition)

    @app.timer(2.0)
    async def refresh_keys() -> None:
        keystore.refresh()

    # mode types its signal handlers with mypy_extensions argument kinds that no def matches
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _rebalanced(sender: Any, **_: Any) -> None:
        deadlines.clear()  # rebuilt from the table at each partition's next tick

    del clock, refresh_keys, _rebalanced, follow_replica
    return app


def _agent(app: faust.App, topic: Any, bus: Bus, handler: Any, name: str) -> None:
    async def agent(stream: Any) -> None:
        await consume(stream, bus, handler)

    agent.__name__ = agent.__qualname__ = "on_" + name.replace("cardbus.", "").replace("-", "_")
    app.agent(topic, name=f"platform.{agent.__name__}")(agent)

