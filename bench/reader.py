"""``cardbus bench reader``: taps through real pcscd + vpcd, published to a real broker.

Each tap: a virtual card connects to a vpcd port (t_insert); the watcher sees it (t_detect);
the agent connects and runs the dialogue (t_read: the ARQC is in), publishes CardTapped and
PaymentRequested and waits for the broker's acks (t_acked). ``detect_ms`` = t_detect - t_insert
(pcscd's polling); ``dialogue_ms`` = t_acked - card connected, split into ``card_ms`` (the
APDUs, through pcscd and vpcd to the card, and the terminal's checks of the card) and
``publish_ms`` (the events built, sealed and acknowledged by the broker). Readers are used in
parallel to cut wall time; the first tap per reader is a warm-up (the first send creates the
bench topics), not counted.

Each reader's card runs in its own process by default (``cards="process"``), as cards inserted
with ``cardbus cards insert`` do; ``cards="thread"`` serves them from threads of the measuring
process instead, where they compete with the agent for the interpreter.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from agents.providers.base import ProviderAdapter, discover
from bench.sim import directory_entry
from cardbus.cardprofile import CardProfile
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cardbus.errors import CardError
from cardbus.readers import virtual_readers
from cards import applet_for
from cards.applet import DEFAULT_ATR
from cards.serve import serve_commands
from cards.vpcd import VirtualCard
from reader_agent.agent import Armed, ReaderAgent, TapOutcome, scripted_pins
from reader_agent.pcscd import Pcscd, list_readers
from reader_agent.publisher import Publisher
from reader_agent.terminal import Terminal
from reader_agent.watcher import ReaderWatcher
from schemas.base import Event
from schemas.cards import CardTapped
from schemas.cardstatus import IssuerScriptApplied
from schemas.payments import PaymentRequested
from schemas.values import Merchant
from streams.broker import resolve_bootstrap

WARMUP = 1  # per reader, not counted: the first send creates the bench topics


def standalone_terminal(providers: dict[str, ProviderHsm], terminal_id: str = "BENCH-1",
                        platform: PlatformHsm | None = None) -> Terminal:
    """A terminal keyed by a throwaway in-memory platform (no platform worker needed): the same
    TerminalHsm operations, wrapped keys and card-auth trust as an enrolled terminal."""
    platform = platform or PlatformHsm(memory_keystore())
    terminal = Terminal.in_memory(terminal_id, memory_keystore(),
                                  Merchant(merchant_id="BENCH", name="Bench shop", mcc="5411"),
                                  platform=platform.verifier)
    for blob in platform.enroll_terminal(terminal_id, terminal.hsm.public_kex()):
        terminal.hsm.install(blob)
    adapters = discover()
    for pid, hsm in providers.items():
        terminal.trust(directory_entry(adapters[pid], hsm))
    return terminal


class TopicBus:
    """A ``Bus`` that publishes to given topics and expects no answer (bench, tests)."""

    def __init__(self, publisher: Publisher, taps_topic: str, requests_topic: str) -> None:
        self.publisher = publisher
        self.taps_topic = taps_topic
        self.requests_topic = requests_topic

    async def publish_tap(self, tapped: CardTapped) -> None:
        await self.publisher.send(self.taps_topic, tapped.terminal_id.encode(), tapped)

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]:
        await self.publisher.send(self.requests_topic, req.card.pan_token.encode(), req)
        return asyncio.get_running_loop().create_future()

    async def cancel(self, req: PaymentRequested) -> None:
        """Nothing answers the bench's requests: nothing to cancel."""

    async def report_script(self, applied: IssuerScriptApplied) -> None:
        await self.publisher.send(self.requests_topic, applied.pan_token.encode(), applied)


class CardProcess:
    """One virtual card answering from a process of its own, inserted and removed on demand."""

    def __init__(self, profile: CardProfile, home: Path, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve_commands, name=f"card-{port}", daemon=True,
                                 args=(child, profile.model_dump_json(), str(home), port))
        self._proc.start()
        child.close()

    def _ask(self, command: str) -> None:
        self._conn.send(command)
        if not self._conn.poll(30):
            raise CardError(f"card process did not {command} in 30 s")
        reply = self._conn.recv()
        if reply != "ok":
            raise CardError(f"card process: {reply}")

    def insert(self) -> None:
        self._ask("insert")

    def remove(self) -> None:
        self._ask("remove")

    def close(self) -> None:
        try:
            self._ask("stop")
        finally:
            self._proc.join(5)
            self._conn.close()


class CardThread:
    """One virtual card answering from a thread of this process."""

    def __init__(self, profile: CardProfile, home: Path, port: int) -> None:
        self._card = VirtualCard(applet_for(profile, home), port)

    def insert(self) -> None:
        self._card.insert()

    def remove(self) -> None:
        self._card.remove()

    def close(self) -> None:
        self._card.remove()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"p50": statistics.median(values) if values else None, "p99": _pct(values, 0.99)}


def _watch(vrs: list[Any]) -> tuple[ReaderWatcher, dict[str, asyncio.Queue[float]],
                                    dict[str, asyncio.Queue[None]]]:
    """A watcher of ``vrs`` whose card arrivals (their time) and removals land in queues."""
    loop = asyncio.get_running_loop()
    arrivals: dict[str, asyncio.Queue[float]] = {r.name: asyncio.Queue() for r in vrs}
    removals: dict[str, asyncio.Queue[None]] = {r.name: asyncio.Queue() for r in vrs}

    def arrived(name: str, _atr: bytes, t: float) -> None:
        loop.call_soon_threadsafe(arrivals[name].put_nowait, t)

    def removed(name: str) -> None:
        loop.call_soon_threadsafe(removals[name].put_nowait, None)

    watcher = ReaderWatcher(arrived, removed, readers=lambda name: name in arrivals).start()
    return watcher, arrivals, removals


async def run_bench(taps: int = 200, readers: int = 4, bootstrap: str | None = None,
                    topic_prefix: str = "cardbus.bench",
                    cards: Literal["process", "thread"] = "process") -> dict[str, Any]:
    """Run ``taps`` taps over ``readers`` virtual readers; returns the numbers."""
    started = None
    if not {r.name for r in virtual_readers(readers)} <= set(list_readers()):
        started = Pcscd(readers)
        started.start()
    home = Path(tempfile.mkdtemp(prefix="cardbus-bench-"))
    adapters: dict[str, ProviderAdapter] = {p: a for p, a in discover().items()
                                            if a.kind == "bank"}
    hsms = {p: ProviderHsm(p, memory_keystore()) for p in adapters}
    terminal = standalone_terminal(hsms)
    publisher = Publisher(resolve_bootstrap(bootstrap), client_id="cardbus-bench",
                          party="terminal")
    await publisher.start()
    bus = TopicBus(publisher, f"{topic_prefix}.taps", f"{topic_prefix}.payment-requests")
    agent = ReaderAgent(terminal, bus, aids={a.aid: p for p, a in adapters.items()},
                        pin_source=scripted_pins("1234"))
    vrs = virtual_readers(readers)
    watcher, arrivals, removals = _watch(vrs)
    detect: list[float] = []
    dialogue: list[float] = []
    card_ms: list[float] = []
    publish_ms: list[float] = []
    errors: list[str] = []
    providers = sorted(adapters)
    armed = Armed(1250, "CNY", terminal.merchant)
    per_reader = [taps // readers + (1 if i < taps % readers else 0) for i in range(readers)]

    async def lane(i: int) -> None:
        reader = vrs[i]
        provider = providers[i % len(providers)]
        profile = adapters[provider].issue_card(hsms[provider], pin="1234",
                                                opening_balance=0).profile
        card: CardProcess | CardThread = await asyncio.to_thread(
            CardProcess if cards == "process" else CardThread, profile, home, reader.port)
        try:
            for n in range(per_reader[i] + WARMUP):
                t_insert = time.monotonic()
                await asyncio.to_thread(card.insert)
                t_detect = await asyncio.wait_for(arrivals[reader.name].get(), 10)
                out: TapOutcome = await agent.handle_card(reader.name, DEFAULT_ATR, armed)
                if out.error or out.request is None:
                    errors.append(out.error or "no request")
                elif n >= WARMUP:
                    detect.append((t_detect - t_insert) * 1000)
                    dialogue.append((out.acked_at - out.connected_at) * 1000)
                    card_ms.append((out.read_at - out.connected_at) * 1000)
                    publish_ms.append((out.acked_at - out.read_at) * 1000)
                if out.request is not None:
                    await agent.release(out.request.correlation_id)
                await asyncio.to_thread(card.remove)
                await asyncio.wait_for(removals[reader.name].get(), 10)
        finally:
            await asyncio.to_thread(card.close)

    try:
        await asyncio.gather(*(lane(i) for i in range(readers)))
    finally:
        watcher.stop()
        await publisher.stop()
        if started is not None:
            started.stop()
    return {
        "taps": len(dialogue), "errors": len(errors), "readers": readers, "cards": cards,
        "warmup_taps": WARMUP * readers,
        "dialogue_ms": _stats(dialogue), "card_ms": _stats(card_ms),
        "publish_ms": _stats(publish_ms), "detect_ms": _stats(detect),
        "bootstrap": publisher.bootstrap,
    }
