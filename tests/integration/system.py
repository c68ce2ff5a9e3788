"""A running CardBus for the integration tests: real Faust workers (separate processes) on the
real broker, a sealed local key setup, software terminals and cards (applets in process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.providers.base import IssuedCard, adapter_for, card_issued_event
from cardbus import ceremony
from cardbus.crypto.keystore import KeyStore
from cardbus.processes import Worker
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, EmvTap, complete_payment, run_payment
from reader_agent.requests import Sale
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from schemas.base import Event, Money
from schemas.payments import PaymentCompleted, PaymentRequested
from streams import codec
from streams.topics import PROVIDER_TABLES, provider_requests_topic, topic_spec
from tests.kafka_auth import operator

REPO = Path(__file__).resolve().parents[2]


@dataclass
class System:
    """The processes and the parties' keys of one test session."""

    bootstrap: str
    home: Path
    env: dict[str, str]
    workers: dict[str, Worker] = field(default_factory=dict)

    def worker(self, name: str, *args: str) -> Worker:
        log = self.home / f"{name}.log"
        w = Worker(name, ["worker", *args, "--loglevel", "info"], self.env, log)
        w.log_start = log.stat().st_size if log.exists() else 0
        self.workers[name] = w
        return w.start()

    async def ready(self, name: str, timeout: float = 120.0) -> None:
        """Wait until worker ``name`` (this start of it) has joined its group and recovered its
        tables: Faust logs "Worker]: Ready" then."""
        w = self.workers[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            text = w.log.read_text(errors="replace")[w.log_start:] if w.log.exists() else ""
            if "Worker]: Ready" in text:
                return
            if not w.alive:
                break
            await asyncio.sleep(0.3)
        raise AssertionError(f"worker {name} not ready\n{self.logs()}")

    def start_provider(self, provider_id: str) -> Worker:
        return self.worker(provider_id, "provider", provider_id)

    def logs(self) -> str:
        return "\n".join(w.tail() for w in self.workers.values())

    def stop_all(self) -> None:
        for w in self.workers.values():
            w.stop()

    # -- cards --------------------------------------------------------------------------------

    async def issue(self, provider_id: str, *, pin: str = "1234", balance: int = 100_000,
                    expiry: str = "301231") -> IssuedCard:
        """Issue a card and open its account at the running provider (a CardIssued event)."""
        adapter = adapter_for(provider_id)
        hsm = ceremony.provider_hsm(provider_id, self.home)
        issued = adapter.issue_card(hsm, pin=pin, opening_balance=balance, expiry=expiry)
        await publish(self.bootstrap, provider_requests_topic(provider_id),
                      issued.card.pan_token, card_issued_event(issued, hsm, now()))
        return issued


def now() -> datetime:
    return datetime.now(UTC)


async def publish(bootstrap: str, topic: str, key: str | None, *events: Event,
                  partition: int | None = None) -> None:
    producer = AIOKafkaProducer(**operator(bootstrap), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(topic, codec.encode(ev, topic=topic),
                                         key=key.encode() if key else None, partition=partition)
    finally:
        await producer.stop()


async def publish_raw(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    producer = AIOKafkaProducer(**operator(bootstrap), bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"junk")
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, partitions: int | None = None) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end (no group)."""
    consumer = AIOKafkaConsumer(**operator(bootstrap), bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        count = partitions if partitions is not None else topic_spec(topic).partitions
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            out += [m for ms in batch.values() for m in ms]
        await asyncio.sleep(0)
        return out
    finally:
        await consumer.stop()


async def events_of(bootstrap: str, topic: str) -> list[Event]:
    spec = topic_spec(topic)
    return [codec.decode(spec.name, m.value) for m in await read_all(bootstrap, topic)]


class Till:
    """A software terminal with software cards: the reader agent's flow without PC/SC."""

    def __init__(self, session: TerminalSession) -> None:
        self.session = session
        self.terminal = session.terminal
        self.states: dict[str, CardState] = {}

    def aids(self) -> dict[str, str]:
        return self.terminal.payment_aids()

    async def learn(self, provider: str, timeout: float = 90) -> None:
        """Enroll again until the platform's key set vouches for ``provider`` too (other tests
        of the session may have brought other providers in meanwhile)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while provider not in self.terminal.card_auth:
            await self.session.enroll(timeout=max(1.0, deadline - loop.time()),
                                      providers=len(self.terminal.card_auth) + 1)

    def tap(self, card: IssuedCard, amount: int, when: datetime | None = None) -> tuple[
            EmvTap, AppletLink]:
        state = self.states.setdefault(card.profile.card_id, CardState(None, atc=0))
        link = AppletLink(applet_for(card.profile, state=state))
        tap = run_payment(link, self.aids(), Checkout(amount=amount, when=when or now()),
                          self.terminal.card_auth_public)
        return tap, link

    def request(self, card: IssuedCard, amount: int, pin: str | None = "1234",
                currency: str = "CNY") -> tuple[PaymentRequested, EmvTap, AppletLink]:
        tap, link = self.tap(card, amount)
        _, req = self.terminal.events(tap, reader="soft", atr="3B8080018080", now=now(),
                                      sale=Sale(Money(amount=amount, currency=currency),
                                                self.terminal.merchant, pin))
        assert req is not None
        return req, tap, link

    async def pay(self, card: IssuedCard, amount: int, pin: str | None = "1234",
                  timeout: float = 30) -> tuple[PaymentCompleted, EmvTap, AppletLink]:
        req, tap, link = self.request(card, amount, pin)
        done = await self.session.pay(req, timeout)
        assert done is not None, f"no answer in {timeout:.0f} s (the terminal cancelled)"
        return done, tap, link

    @staticmethod
    def card_accepts(done: PaymentCompleted, tap: EmvTap, link: AppletLink) -> bool:
        """The second GENERATE AC: does the card accept the issuer's answer (ARPC)?"""
        assert done.arpc is not None
        result = complete_payment(link, tap, done.response_code.encode(),
                                  bytes.fromhex(done.arpc))
        return result.issuer_authenticated


async def enroll_active(session: TerminalSession, *, providers: int = 2,
                        timeout: float = 90) -> None:
    """Enroll the session's terminal, then activate it as the operator (a new terminal is
    suspended until then) and wait until its key set says it is active."""
    from console.commands.reader import set_terminal_status

    await session.enroll(timeout=timeout, providers=providers)
    await set_terminal_status(session.bootstrap, session.terminal.terminal_id)
    await session.until_active(timeout)


def software_terminal(terminal_id: str, home: Path) -> Terminal:
    return Terminal.create(terminal_id, home=home)


def memory_terminal(terminal_id: str, home: Path) -> Terminal:
    from cardbus import vault
    from cardbus.crypto.keystore import memory_keystore

    ks: KeyStore = memory_keystore()
    return Terminal.in_memory(terminal_id, ks, platform=vault.identity("platform", home))


async def table(bootstrap: str, app_id: str, name: str) -> dict[str, Any]:
    """The current content of a Faust table, read from its changelog topic."""
    import json

    out: dict[str, Any] = {}
    for msg in await read_all(bootstrap, f"{app_id}-{name}-changelog",
                              partitions=PROVIDER_TABLES[name]):
        key = json.loads(msg.key)
        if msg.value is None:
            out.pop(key, None)
        else:
            out[key] = json.loads(msg.value)
    return out


async def accounts(bootstrap: str, provider_id: str) -> dict[str, Any]:
    """A provider's ledger accounts by PAN token (from the ledger table's changelog)."""
    from agents.providers.state import CardLedger
    from streams.topics import provider_app_id

    raw = await table(bootstrap, provider_app_id(provider_id), "ledger")
    return {k: CardLedger.model_validate(v).account for k, v in raw.items() if v}


async def lag(bootstrap: str, group: str, topic: str) -> int:
    """How many records of ``topic`` the consumer group ``group`` has not committed yet."""
    from bench.procs import consumer_lag

    return (await consumer_lag(bootstrap, {group: [(topic, topic_spec(topic).partitions)]}))[
        group]
