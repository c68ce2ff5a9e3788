"""``cardbus bench reader``: taps through real pcscd + vpcd, published to a real broker.

Each tap: a virtual card connects to a vpcd port (t_insert); the watcher sees it (t_detect);
the agent connects and runs the dialogue, publishes CardTapped and PaymentRequested and waits
for the broker's acks (t_acked). ``detect_ms`` = t_detect - t_insert (pcscd's polling);
``dialogue_ms`` = t_acked - card connected. Readers are used in parallel to cut wall time;
the first tap per reader is a warm-up (the first send creates the bench topics), not counted.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cardbus.crypto.keys import KeyAlg, kcv
from reader_agent.agent import Armed, ReaderAgent, TapOutcome, scripted_pins
from reader_agent.cards import applet_for
from reader_agent.cards.profile import PROVIDERS, IssuerKeys, issue_card
from reader_agent.cards.vpcd import VirtualCard
from reader_agent.keystore import CardAuthKey, TerminalKeys
from reader_agent.pcscd import Pcscd, list_readers, virtual_readers
from reader_agent.publisher import Publisher, default_bootstrap
from reader_agent.watcher import ReaderWatcher
from schemas.values import Merchant

WARMUP = 1  # per reader, not counted: the first send creates the bench topics


def bench_keys(issuers: dict[str, IssuerKeys], terminal_id: str = "BENCH-1") -> TerminalKeys:
    """Throwaway terminal keys (no platform needed): random MAC/PIN keys, local issuers."""
    mac, pin = secrets.token_bytes(32), secrets.token_bytes(16)
    assert kcv(mac, KeyAlg.HMAC)
    return TerminalKeys(
        terminal_id=terminal_id,
        merchant=Merchant(merchant_id="BENCH", name="Bench shop", mcc="5411"),
        identity_key_id="bench.identity", identity_private=secrets.token_bytes(32).hex(),
        wrap_key_id="bench.wrap", wrap_private=secrets.token_bytes(32).hex(),
        mac_key_id="bench.mac.1", mac_key=mac.hex(), pin_key_id="bench.pin.1", pin_key=pin.hex(),
        card_auth_keys={p: CardAuthKey(key_id=k.ca_key_id, public_key=k.card_auth_public.hex())
                        for p, k in issuers.items()})


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
    (home / "issuers").mkdir()
    issuers = {p: IssuerKeys.load_or_create(p, home / "issuers")
               for p, s in PROVIDERS.items() if s.kind == "emv"}
    keys = bench_keys(issuers)
    publisher = Publisher(bootstrap or default_bootstrap(), client_id="cardbus-bench")
    await publisher.start()
    aids = {s.aid: s.provider for s in PROVIDERS.values() if s.kind == "emv"}
    agent = ReaderAgent(keys, publisher.send, aids=aids, pin_source=scripted_pins("1234"),
                        taps_topic=f"{topic_prefix}.taps",
                        requests_topic=f"{topic_prefix}.payment-requests")
    loop = asyncio.get_running_loop()
    vrs = virtual_readers(readers)
    by_name = {r.name: r for r in vrs}
    arrivals: dict[str, asyncio.Queue[float]] = {r.name: asyncio.Queue() for r in vrs}
    removals: dict[str, asyncio.Queue[None]] = {r.name: asyncio.Queue() for r in vrs}
    watcher = ReaderWatcher(
        lambda name, _atr, t: loop.call_soon_threadsafe(arrivals[name].put_nowait, t),
        lambda name: loop.call_soon_threadsafe(removals[name].put_nowait, None),
        readers=lambda name: name in by_name).start()
    detect: list[float] = []
    dialogue: list[float] = []
    errors: list[str] = []
    providers = sorted(issuers)
    armed = Armed(1250, "CNY", keys.merchant)
    per_reader = [taps // readers + (1 if i < taps % readers else 0) for i in range(readers)]

    async def lane(i: int) -> None:
        reader = vrs[i]
        provider = providers[i % len(providers)]
        profile = issue_card(provider, issuer=issuers[provider])
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
                await agent.complete(out.request.correlation_id, False, None)
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
