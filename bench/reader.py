"""``cardbus bench reader``: taps through real pcscd + vpcd, published to a real broker.

Each tap: a virtual card connects to a vpcd port (t_insert); the watcher sees it (t_detect);
the agent connects and runs the dialogue, publishes CardTapped and PaymentRequested and waits
for the broker's acks (t_acked). ``detect_ms`` = t_detect - t_insert (pcscd's polling);
``dialogue_ms`` = t_acked - card connected. Readers are used in parallel to cut wall time;
the first tap per reader is a warm-up (the first send creates the bench topics), not counted.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.providers.base import ProviderAdapter, discover
from bench.sim import directory_entry
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cardbus.readers import virtual_readers
from cards import applet_for
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


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def run_bench(taps: int = 200, readers: int = 4, bootstrap: str | None = None,
                    topic_prefix: str = "cardbus.bench") -> dict[str, Any]:
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
    loop = asyncio.get_running_loop()
    vrs = virtual_readers(readers)
    by_name = {r.name: r for r in vrs}
    arrivals: dict[str, asyncio.Queue[float]] = {r.name: asyncio.Queue() for r in vrs}
    removals: dict[str, asyncio.Queue[None]] = {r.name: asyncio.Queue() for r in vrs}
    def arrived(name: str, _atr: bytes, t: float) -> None:
        loop.call_soon_threadsafe(arrivals[name].put_nowait, t)

    def removed(name: str) -> None:
        loop.call_soon_threadsafe(removals[name].put_nowait, None)

    watcher = ReaderWatcher(arrived, removed, readers=lambda name: name in by_name).start()
    detect: list[float] = []
    dialogue: list[float] = []
    errors: list[str] = []
    providers = sorted(adapters)
    armed = Armed(1250, "CNY", terminal.merchant)
    per_reader = [taps // readers + (1 if i < taps % readers else 0) for i in range(readers)]

    async def lane(i: int) -> None:
        reader = vrs[i]
        provider = providers[i % len(providers)]
        profile = adapters[provider].issue_card(hsms[provider], pin="1234",
                                                opening_balance=0).profile
        applet = applet_for(profile, home)
        for n in range(per_reader[i] + WARMUP):
            card = VirtualCard(applet, reader.port)
            t_insert = time.monotonic()
            await asyncio.to_thread(card.insert)
            t_detect = await asyncio.wait_for(arrivals[reader.name].get(), 10)
            if n >= WARMUP:
                detect.append((t_detect - t_insert) * 1000)
            out: TapOutcome = await agent.handle_card(reader.name, applet.atr, armed)
            if out.error or out.request is None:
                errors.append(out.error or "no request")
            elif n >= WARMUP:
                dialogue.append((out.acked_at - out.connected_at) * 1000)
                await agent.release(out.request.correlation_id)
            await asyncio.to_thread(card.remove)
            await asyncio.wait_for(removals[reader.name].get(), 10)

    try:
        await asyncio.gather(*(lane(i) for i in range(readers)))
    finally:
        watcher.stop()
        await publisher.stop()
        if started is not None:
            started.stop()
    return {
        "taps": len(dialogue), "errors": len(errors), "readers": readers,
        "warmup_taps": WARMUP * readers,
        "dialogue_ms": {"p50": statistics.median(dialogue) if dialogue else None,
                        "p99": _pct(dialogue, 0.99)},
        "detect_ms": {"p50": statistics.median(detect) if detect else None,
                      "p99": _pct(detect, 0.99)},
        "bootstrap": publisher.bootstrap,
    }
