"""A CardBus trail made in process: the events the parties would publish, as Kafka records.

Every party is real (its HSM over a sealed key store in ``home``, so the auditor can open the
same stores), every decision is the real pure function: the platform's ``request_payment`` /
``take_decision`` / ``expire`` and the provider adapter through ``ProviderReplayer`` (the same
threading as the provider app). Partitions are Kafka's default (murmur2 of the key), so the
records can be published as they are. Used by the audit tests and ``cardbus bench audit``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.partitioner import murmur2

from agents.platform import decide as platform
from agents.providers.announce import key_provisioning, registration
from agents.providers.base import IssuedCard, adapter_for, card_issued_event
from audit.model import Record
from audit.rederive import ProviderReplayer
from bench.sim import World, kbpk_ceremony
from cardbus import vault
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cards.profile import CardState
from reader_agent.requests import Sale, tap_events
from reader_agent.terminal import enrollment
from schemas.base import Event, Money, header, new_event_id
from schemas.clock import ClockTicked
from schemas.ledger import SettlementCutoverRequested
from schemas.payments import PaymentCompleted
from schemas.values import Merchant
from streams import codec
from streams.topics import NAMESPACE, topic_spec

MERCHANT = Merchant(merchant_id="M-0001", name="CardBus Demo Shop", mcc="5999")


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes)."""
    return int((murmur2(key.encode()) & 0x7FFFFFFF) % partitions)


@dataclass
class Trail:
    """Records by topic (names without namespace), in publish order."""

    records: list[Record] = field(default_factory=list)
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    payments: int = 0
    timeouts: int = 0

    def add(self, topic: str, key: str | None, event: Event, ts_ms: int,
            partition: int | None = None) -> Record:
        spec = topic_spec(f"{NAMESPACE}.{topic}")
        if partition is None:
            partition = partition_for(key or "", spec.partitions)
        off = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = off + 1
        rec = Record(topic, partition, off, ts_ms, key.encode() if key else None,
                     codec.encode(event))
        self.records.append(rec)
        return rec


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def build_world(home: Path, provider_ids: list[str], terminal_ids: list[str],
                trail: Trail, now: datetime) -> tuple[World, dict[str, ProviderReplayer]]:
    """Parties with sealed key stores in ``home``; their registrations on the trail."""
    stores = {}
    for party in ["platform", *[f"provider-{p}" for p in provider_ids]]:
        vault.create(party, home)
        stores[party] = vault.FileKeyStore(party, home)
    world = World(PlatformHsm(stores["platform"]))
    ts = _ms(now)
    for pid in provider_ids:
        adapter = adapter_for(pid)
        hsm = ProviderHsm(pid, stores[f"provider-{pid}"])
        kbpk_ceremony(world.platform, hsm)
        world.providers[pid], world.adapters[pid] = hsm, adapter
        reg, keys = registration(adapter, hsm, now), key_provisioning(hsm, now)
        trail.add("key-history", pid, reg, ts)  # the key history first, as the apps do
        trail.add("providers", pid, reg, ts)
        trail.add("provider-keys", pid, keys, ts)
        route = platform.register_provider(reg, None)
        world.routes[pid] = platform.provision_keys(keys, route, world.platform)
    from cardbus.crypto.keystore import memory_keystore

    for tid in terminal_ids:
        terminal = TerminalHsm(tid, memory_keystore())
        enrolled = enrollment(terminal, MERCHANT, now)
        record, issued = platform.enroll_terminal(enrolled, None, world.platform, world.routes)
        for key in issued.keys:
            terminal.install(key.wrapped)
        for hsm in world.providers.values():
            terminal.trust_card_ca(hsm.card_ca_verifier)
        world.terminals[tid], world.terminal_records[tid] = terminal, record
        trail.add("key-history", tid, enrolled, ts)
        trail.add("terminals", tid, enrolled, ts)
        trail.add("key-history", tid, issued, ts)
        trail.add("terminal-keys", tid, issued, ts)
    for store in stores.values():
        store.save()
    vault.publish_identity("platform", world.platform.verifier, home)
    platform_verifier = world.platform.verifier
    replayers = {f"{pid}.{p}": ProviderReplayer(world.adapters[pid], world.providers[pid],
                                                platform_verifier, p)
                 for pid in provider_ids
                 for p in range(topic_spec(f"{NAMESPACE}.provider.{pid}.requests").partitions)}
    return world, replayers


def simulate(home: Path, payments: int, *, providers: tuple[str, ...] = ("bank-a", "bank-b"),
             terminals: int = 2, cards_per_provider: int = 6, seed: int = 7,
             start: datetime | None = None, step_ms: int = 20, timeout_every: int = 25,
             cutover_every: int = 200, tick_ms: int = 500) -> Trail:
    """A trail of ``payments`` payments: approvals, wrong PINs, insufficient funds, timeouts
    with their reversals (and late-approval reversals), settlement cut-overs, clock ticks."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not crypto
    now = start or datetime(2030, 1, 1, tzinfo=UTC) - timedelta(days=400)
    trail = Trail()
    tids = [f"T-{i:04d}" for i in range(terminals)]
    world, replayers = build_world(home, list(providers), tids, trail, now)
    cards = _issue_cards(world, replayers, trail, providers, cards_per_provider, rng, now)
    clock = now
    next_tick = _ms(now) + tick_ms
    req_parts = topic_spec(f"{NAMESPACE}.payment-requests").partitions

    def provider_step(pid: str, key: str, ev: Event, ts: int) -> list[Event]:
        rec = trail.add(f"provider.{pid}.requests", key, ev, ts)
        outs = []
        for topic, out in replayers[f"{pid}.{rec.partition}"].apply(ev, rec.timestamp_ms):
            trail.add(topic, key if topic == "provider-results" else pid, out, ts + 1)
            outs.append(out)
        return outs

    def emit(out: platform.Out, ts: int) -> list[Event]:
        answers: list[Event] = []
        for role, key, event in out.events:
            if role == "terminal":
                trail.add("terminal-results", key, event, ts)
            else:
                answers += provider_step(role.split(":", 1)[1], key, event, ts)
        return answers

    for n in range(payments):
        clock += timedelta(milliseconds=step_ms)
        ts = _ms(clock)
        while next_tick <= ts:
            _tick(world, trail, next_tick, req_parts)
            next_tick += tick_ms
        pid, card, state = cards[rng.randrange(len(cards))]
        tid = tids[n % len(tids)]
        roll = rng.random()
        pin = "1111" if roll < 0.05 else "1234"
        amount = 900_000 if roll > 0.95 else rng.randrange(100, 3_000)
        tap = world.tap(card, amount=amount, when=clock, state=state)
        tapped, req = tap_events(world.terminals[tid], tap, reader="sim", atr="3B8080018080",
                                 now=clock, sale=Sale(Money(amount=amount, currency="CNY"),
                                                      MERCHANT, pin),
                                 payment_id=new_event_id())
        assert req is not None
        trail.add("taps", tid, tapped, ts)
        trail.add("payment-requests", req.card.pan_token, req, ts)
        trail.payments += 1
        pending, out = platform.request_payment(
            req, received_at=clock, terminal=world.terminal_records[tid], routes=world.routes,
            hsm=world.platform)
        answers = emit(out, ts + 1)
        if pending is None:
            continue
        if timeout_every and n % timeout_every == timeout_every - 1:
            # the provider is slow: the platform's clock passes the deadline first
            trail.timeouts += 1
            tick_at = pending.deadline + timedelta(milliseconds=1)
            part = partition_for(req.card.pan_token, req_parts)
            trail.add("payment-requests", None, world.platform.sign_event(ClockTicked(
                event_id=f"tick-{part}-late-{n}", correlation_id=f"clock-{part}",
                occurred_at=tick_at, producer="platform", partition=part)),
                _ms(tick_at), partition=part)
            pending, out = platform.expire(pending, now=tick_at, hsm=world.platform)
            emit(out, _ms(tick_at))
            clock = tick_at  # time moved on while the platform waited: logs stay in time order
            next_tick = max(next_tick, _ms(tick_at) + 1)
            ts = _ms(clock)
        for answer in answers:
            pending, out = platform.take_decision(answer, pending=pending,  # type: ignore[arg-type]
                                                  route=world.routes[pid], hsm=world.platform)
            emit(out, ts + 2)
        if cutover_every and (n + 1) % cutover_every == 0:
            _cut_over(world, replayers, trail, providers, f"B{n + 1:08d}", clock, ts)
    return trail


def _issue_cards(world: World, replayers: dict[str, ProviderReplayer], trail: Trail,
                 providers: tuple[str, ...], per_provider: int, rng: random.Random,
                 now: datetime) -> list[tuple[str, IssuedCard, CardState]]:
    """Each provider's cards, their CardIssued on the trail and in the replayers."""
    cards: list[tuple[str, IssuedCard, CardState]] = []
    for pid in providers:
        for _ in range(per_provider):
            issued = world.issue(pid, balance=rng.choice([5_000, 200_000, 2_000_000]))
            ev = card_issued_event(issued, world.providers[pid], now)
            rec = trail.add(f"provider.{pid}.requests", issued.card.pan_token, ev, _ms(now))
            replayers[f"{pid}.{rec.partition}"].apply(ev, rec.timestamp_ms)
            cards.append((pid, issued, CardState(None, atc=0)))
    return cards


def _tick(world: World, trail: Trail, at_ms: int, partitions: int) -> None:
    """The platform's sealed clock tick on every partition of the payment requests."""
    for p in range(partitions):
        tick = world.platform.sign_event(ClockTicked(
            event_id=f"tick-{p}-{at_ms / 1000:.3f}", correlation_id=f"clock-{p}",
            occurred_at=datetime.fromtimestamp(at_ms / 1000, UTC),
            producer="platform", partition=p))
        trail.add("payment-requests", None, tick, at_ms, partition=p)


def _cut_over(world: World, replayers: dict[str, ProviderReplayer], trail: Trail,
              providers: tuple[str, ...], batch_id: str, clock: datetime, ts: int) -> None:
    """A settlement cut-over by each provider, one command per partition (own event id)."""
    for p_id in providers:
        hsm = world.providers[p_id]
        spec = topic_spec(f"{NAMESPACE}.provider.{p_id}.requests")
        for p in range(spec.partitions):
            cut = hsm.sign_event(SettlementCutoverRequested(
                **header(f"provider:{p_id}", batch_id, clock),
                provider_id=p_id, batch_id=batch_id))
            trail.add(f"provider.{p_id}.requests", None, cut, ts + 3, partition=p)
            for topic, out_ev in replayers[f"{p_id}.{p}"].apply(cut, ts + 3):
                trail.add(topic, p_id, out_ev, ts + 4)


def completed_codes(trail: Trail) -> dict[str, int]:
    """Response codes of the trail's PaymentCompleted events (for tests)."""
    out: dict[str, int] = {}
    for rec in trail.records:
        if rec.topic == "terminal-results":
            ev = codec.decode(None, rec.value)
            if isinstance(ev, PaymentCompleted):
                out[ev.response_code] = out.get(ev.response_code, 0) + 1
    return out
