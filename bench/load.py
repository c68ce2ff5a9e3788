"""The load generator: software terminals and software cards, requests made before the clock.

Each card is the real EMV applet (``cards``) driven in process through
``AppletLink`` (no PC/SC, so the reader is not the bottleneck); each terminal is the real
``Terminal`` (sealed key store, keys issued by the running platform). A payment request costs
the generator ~1 ms of card dialogue, MAC, PIN block and PAN encryption, which would cap one
generator core near 1,000/s, so requests are made *before* the clock starts, in two helper
processes (cards split between them, each card's ATC in order), and the timed phases only
publish bytes and read results.

Terminals resend as real ones do (``Terminals``): a request with no answer is published again
(the same bytes: same event id) after a pause that doubles up to a cap, and at the terminal's
deadline the payment is cancelled (``PaymentCancelled``, MAC'd by the terminal): its outcome at
the terminal is "no answer" and the platform undoes whatever the bank decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bench.stats import Seen, Sent
from reader_agent.terminal import Terminal
from schemas.base import header
from schemas.payments import PaymentCancelled, PaymentRequested
from streams import clients, codec
from streams.topics import PAYMENT_REQUESTS, TERMINAL_RESULTS

LINGER_MS = 2


@dataclass(frozen=True)
class Prepared:
    """One request, encoded and ready to publish."""

    key: bytes
    value: bytes
    sent: Sent


# -- helper processes (module globals live in the pool process) ----------------------------

_TERMINALS: list[Any] = []
_CARDS: dict[str, tuple[Any, Any]] = {}  # card id -> (profile, CardState)
_HOME: Path | None = None
_CARDS_DIR: Path | None = None
"""The cards' folder, resolved once: resolving it reads the settings from the environment
(~1 ms of CPU), which was more than half of each request's making (2.1 -> 0.8 ms)."""


def _init(home: str, terminal_ids: list[str]) -> None:
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    from cards.profile import cards_dir

    global _HOME, _CARDS_DIR
    _HOME = Path(home)
    _CARDS_DIR = cards_dir()
    _TERMINALS[:] = [_reopen(Terminal, tid, _HOME) for tid in terminal_ids]


def _reopen(cls: Any, terminal_id: str, home: Path) -> Any:
    """A terminal reopened read-only (``Terminal.open`` rewrites its files: two helpers
    opening one terminal at once would race)."""
    from cardbus import vault
    from cardbus.crypto.hsm import TerminalHsm
    from schemas.terminals import ProviderCardAuthKey
    from schemas.values import Merchant

    party = f"terminal-{terminal_id}"
    data = json.loads((vault.party_dir(party, home) / "terminal.json").read_text())
    term = cls(TerminalHsm(terminal_id, vault.FileKeyStore(party, home)),
               Merchant.model_validate(data["merchant"]), platform=vault.identity("platform", home))
    for entry in data.get("providers", []):
        term.trust(ProviderCardAuthKey.model_validate(entry))
    return term


def make_requests(cards: list[Any], rounds: int, seed: int
                  ) -> list[list[tuple[bytes, bytes, str, str, int]]]:
    """In a helper process: ``rounds`` requests per card (``cards``: CardProfile list);
    result[r] is round r's requests, one per card."""
    from cards import applet_for
    from cards.profile import CardState
    from reader_agent.dialogue import AppletLink, Checkout, run_payment
    from reader_agent.requests import Sale
    from schemas.base import Money
    from streams import codec

    rng = random.Random(seed)  # noqa: S311 - amounts and terminal choice, not secrets
    out: list[list[tuple[bytes, bytes, str, str, int]]] = [[] for _ in range(rounds)]
    topic = PAYMENT_REQUESTS.name
    for profile in cards:
        entry = _CARDS.get(profile.card_id)
        if entry is None:
            entry = _CARDS[profile.card_id] = (profile, CardState(None, atc=0))
        _, state = entry
        for r in range(rounds):
            term = _TERMINALS[rng.randrange(len(_TERMINALS))]
            aids = term.payment_aids()
            amount = rng.randrange(100, 5_000)
            now = datetime.now(UTC)
            link = AppletLink(applet_for(profile, _CARDS_DIR, state=state))
            tap = run_payment(link, aids, Checkout(amount=amount, when=now),
                              term.card_auth_public)
            _, req = term.events(tap, reader="bench", atr="3B8080018080", now=now,
                                 sale=Sale(Money(amount=amount, currency="CNY"), term.merchant,
                                           "1234"))
            out[r].append((req.card.pan_token.encode(), codec.encode(req, topic=topic),
                           req.correlation_id, profile.provider, amount))
    return out


class Generator:
    """Makes requests in two helper processes, each owning half of the cards."""

    def __init__(self, home: Path, terminal_ids: list[str], cards: list[Any],
                 helpers: int = 2) -> None:
        self.cards = cards
        self.pools = [ProcessPoolExecutor(1, initializer=_init,
                                          initargs=(str(home), terminal_ids))
                      for _ in range(helpers)]
        self.seed = 0

    def prepare(self, count: int) -> list[Prepared]:
        """At least ``count`` requests, interleaved across cards (round by round)."""
        rounds = max(1, -(-count // len(self.cards)))
        shares = [self.cards[i::len(self.pools)] for i in range(len(self.pools))]
        futures = []
        for pool, share in zip(self.pools, shares, strict=True):
            self.seed += 1
            futures.append(pool.submit(make_requests, share, rounds, self.seed))
        parts = [f.result() for f in futures]
        out: list[Prepared] = []
        for r in range(rounds):
            for part in parts:
                out += [Prepared(k, v, Sent(pid, prov, amount))
                        for k, v, pid, prov, amount in part[r]]
        return out

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)


# -- publishing and reading results ---------------------------------------------------------


@dataclass
class Phase:
    """What one timed phase sent and saw."""

    name: str
    sent_at: dict[str, int] = field(default_factory=dict)  # payment id -> record timestamp ms
    latencies_ms: list[int] = field(default_factory=list)
    started: float = 0.0
    first_result: float = 0.0
    last_result: float = 0.0
    sent_count: int = 0
    done_count: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Results:
    """Reads ``terminal-results`` from the start (a fresh namespace), matches payments."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.seen: list[Seen] = []
        self.phase: Phase | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_result: Callable[[], None] | None = None
        self.on_answer: Callable[[str], None] | None = None  # every answer, by payment id

    async def start(self) -> None:
        c = clients.consumer(self.bootstrap, party="terminal", client_id="bench-results")
        await c.start()
        tps = [TopicPartition(TERMINAL_RESULTS.name, p)
               for p in range(TERMINAL_RESULTS.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._consumer = c
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5_000)
            now = time.time()
            for msgs in batch.values():
                for msg in msgs:
                    self._take(msg, now)

    def _take(self, msg: Any, now: float) -> None:
        raw = json.loads(msg.value)
        if raw.get("type") != "PaymentCompleted":
            return
        pid = raw["correlation_id"]
        self.seen.append(Seen(pid, raw["response_code"], bool(raw["approved"]),
                              int(raw["amount"]["amount"]), raw.get("auth_code"),
                              msg.timestamp))
        if self.on_answer is not None:
            self.on_answer(pid)
        phase = self.phase
        if phase is None:
            return
        sent = phase.sent_at.pop(pid, None)
        if sent is None:
            return
        phase.latencies_ms.append(msg.timestamp - sent)
        phase.done_count += 1
        phase.first_result = phase.first_result or now
        phase.last_result = now
        if phase.done_count >= phase.sent_count and phase.sent_count and not phase.sent_at:
            phase.finished.set()
        if self.on_result is not None:
            self.on_result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def new_producer(bootstrap: str, party: str = "terminal") -> AIOKafkaProducer:
    p = clients.producer(bootstrap, party=party, linger_ms=LINGER_MS,
                         client_id=f"bench-load-{uuid.uuid4().hex[:6]}")
    await p.start()
    return p


async def closed_loop(producer: AIOKafkaProducer, results: Results, reqs: list[Prepared],
                      window: int, name: str = "max", timeout: float = 120,
                      terminals: Terminals | None = None) -> Phase:
    """Keep ``window`` payments in flight until ``reqs`` are all answered: the maximum."""
    phase = Phase(name, sent_count=len(reqs))
    results.phase = phase
    if terminals is not None:
        terminals.phase = phase
    slots = asyncio.Semaphore(window)
    results.on_result = slots.release
    if terminals is not None:
        terminals.on_cancel = slots.release
    phase.started = time.time()
    topic = PAYMENT_REQUESTS.name
    for r in reqs:
        await slots.acquire()
        ts = int(time.time() * 1000)
        phase.sent_at[r.sent.payment_id] = ts
        await producer.send(topic, r.value, key=r.key, timestamp_ms=ts)
        if terminals is not None:
            terminals.sent(r, ts / 1000)
    await _wait(phase, timeout)
    results.on_result = None
    if terminals is not None:
        terminals.on_cancel = None
    return phase


async def open_loop(producer: AIOKafkaProducer, results: Results, reqs: list[Prepared],
                    rate: float, name: str, timeout: float = 120,
                    terminals: Terminals | None = None) -> Phase:
    """Send at a fixed offered rate, each request stamped with its *scheduled* time, so a
    stalled system shows as latency (no coordinated omission). With ``terminals``, requests
    are resent and cancelled as terminals do; a cancelled payment ends the wait for it."""
    phase = Phase(name, sent_count=len(reqs))
    results.phase = phase
    if terminals is not None:
        terminals.phase = phase
    phase.started = start = time.time()
    topic = PAYMENT_REQUESTS.name
    i = 0
    while i < len(reqs):
        due = min(len(reqs), int((time.time() - start) * rate) + 1)
        while i < due:
            r = reqs[i]
            ts = int((start + i / rate) * 1000)
            phase.sent_at[r.sent.payment_id] = ts
            if terminals is not None:  # in flight first: a send the bus refuses is resent
                terminals.sent(r, ts / 1000)
                await terminals.publish(topic, r.value, r.key, ts)
            else:
                await producer.send(topic, r.value, key=r.key, timestamp_ms=ts)
            i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.time()))
    await _wait(phase, timeout)
    return phase


@dataclass(frozen=True)
class ResendPolicy:
    """When a terminal resends an unanswered request, and when it gives up (seconds)."""

    first: float = 2.0
    max_pause: float = 8.0
    deadline: float = 30.0


@dataclass
class _Flight:
    prepared: Prepared
    first: float
    next_at: float
    pause: float


class Terminals:
    """The terminals' side of "one final outcome per payment": each unanswered request is
    resent (same bytes, same event id) with a doubling pause, and cancelled at the deadline
    (``PaymentCancelled`` under the terminal's MAC; ``cancel_event`` makes it)."""

    def __init__(self, producer: AIOKafkaProducer, policy: ResendPolicy,
                 cancel_event: Callable[[PaymentRequested], PaymentCancelled]) -> None:
        self.producer = producer
        self.policy = policy
        self.cancel_event = cancel_event
        self.flights: dict[str, _Flight] = {}
        self.sent_ms: dict[str, int] = {}  # payment id -> (scheduled) first send, ms
        self.resends = 0
        self.resent: set[str] = set()
        self.cancelled: dict[str, float] = {}  # payment id -> when
        self.phase: Phase | None = None
        self.on_cancel: Callable[[], None] | None = None
        self.refused = 0  # sends the bus did not take (a broker down): tried again later
        self.undelivered = 0  # sends taken but not delivered: the payment is resent

    async def publish(self, topic: str, value: bytes, key: bytes | None,
                      timestamp_ms: int | None = None) -> bool:
        """Send as a terminal does: False if the bus did not take it (no leader for longer
        than the producer waits), which a terminal answers by trying again later."""
        try:
            delivery = await self.producer.send(topic, value, key=key, timestamp_ms=timestamp_ms)
        except KafkaError:
            self.refused += 1
            return False
        delivery.add_done_callback(self._delivered)
        return True

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        """A send the bus took into its buffer but could not deliver (no leader before the
        delivery timeout) is counted; the payment stays in flight and is resent."""
        if not delivery.cancelled() and delivery.exception() is not None:
            self.undelivered += 1

    def sent(self, r: Prepared, at: float) -> None:
        p = self.policy
        self.sent_ms[r.sent.payment_id] = int(at * 1000)
        self.flights[r.sent.payment_id] = _Flight(r, at, at + p.first, p.first)

    def answered(self, payment_id: str) -> None:
        self.flights.pop(payment_id, None)

    async def run(self, every: float = 0.1) -> None:
        """Resend and cancel what is due, until cancelled."""
        topic = PAYMENT_REQUESTS.name
        while True:
            now = time.time()
            due = [f for f in self.flights.values() if f.next_at <= now]
            for f in sorted(due, key=lambda f: f.next_at):
                pid = f.prepared.sent.payment_id
                if pid not in self.flights:
                    continue
                if now >= f.first + self.policy.deadline:
                    await self._cancel(f, now)
                    continue
                await self.publish(topic, f.prepared.value, f.prepared.key)
                self.resends += 1
                self.resent.add(pid)
                f.pause = min(f.pause * 2, self.policy.max_pause)
                f.next_at = min(now + f.pause, f.first + self.policy.deadline)
            await asyncio.sleep(every)

    async def _cancel(self, f: _Flight, now: float) -> None:
        pid = f.prepared.sent.payment_id
        self.flights.pop(pid, None)
        req = codec.decode_as(PAYMENT_REQUESTS.name, f.prepared.value, PaymentRequested)
        ev = self.cancel_event(req)
        topic = PAYMENT_REQUESTS.name
        while not await self.publish(topic, codec.encode(ev, topic=topic), f.prepared.key):
            await asyncio.sleep(1.0)  # a cancellation is sent until the bus takes it
        self.cancelled[pid] = now
        if self.on_cancel is not None:
            self.on_cancel()
        phase = self.phase
        if phase is not None and phase.sent_at.pop(pid, None) is not None \
                and not phase.sent_at:
            phase.finished.set()


def cancel_maker(home: Path) -> Callable[[PaymentRequested], PaymentCancelled]:
    """Makes a payment's ``PaymentCancelled`` as its terminal does (the terminals reopened
    read-only from ``home``)."""
    opened: dict[str, Any] = {}

    def make(req: PaymentRequested) -> PaymentCancelled:
        term = opened.get(req.terminal_id)
        if term is None:
            term = opened[req.terminal_id] = _reopen(Terminal, req.terminal_id, home)
        ev = PaymentCancelled(**header(f"terminal:{req.terminal_id}", req.correlation_id),
                              terminal_id=req.terminal_id, request_event_id=req.event_id,
                              pan_token=req.card.pan_token, reason="no_answer")
        return term.hsm.mac_event(ev)  # type: ignore[no-any-return]

    return make


async def _wait(phase: Phase, timeout: float) -> None:
    if phase.sent_at:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phase.finished.wait(), timeout)
