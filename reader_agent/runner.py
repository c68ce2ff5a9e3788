"""``cardbus reader``: the agent process (key store, watcher, publisher, results)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from aiokafka import AIOKafkaConsumer

from cardbus.errors import DecodeError
from cardbus.logs import get_logger
from reader_agent.agent import ReaderAgent, interactive_pin, scripted_pins
from reader_agent.cards.profile import PROVIDERS
from reader_agent.keystore import TerminalKeyStore
from reader_agent.publisher import Publisher, default_bootstrap
from reader_agent.watcher import ReaderWatcher
from schemas.payments import PaymentCompleted
from schemas.terminals import TerminalKeysIssued
from streams.codec import decode

log = get_logger("reader_agent.runner")

TERMINAL_KEYS = "cardbus.terminal-keys"
TERMINAL_RESULTS = "cardbus.terminal-results"


async def wait_for_keys(store: TerminalKeyStore, bootstrap: str, timeout: float = 60) -> None:
    """Read this terminal's TerminalKeysIssued from the compacted topic into the key store."""
    keys = store.load()
    consumer = AIOKafkaConsumer(TERMINAL_KEYS, bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            async for msg in consumer:
                if msg.key != keys.terminal_id.encode():
                    continue
                try:
                    event = decode(TERMINAL_KEYS, msg.value)
                except DecodeError as exc:
                    log.warning("bad terminal-keys record", error=str(exc))
                    continue
                if isinstance(event, TerminalKeysIssued):
                    keys = store.apply_keys_issued(event)
                    log.info("terminal keys stored", providers=sorted(keys.card_auth_keys))
                    if keys.ready:
                        return
    finally:
        await consumer.stop()


async def run_reader(*, amount: int | None, currency: str, pin: str | None,
                     bootstrap: str | None, once: bool) -> int:
    bootstrap = bootstrap or default_bootstrap()
    store = TerminalKeyStore()
    if not store.load().ready:
        log.info("waiting for terminal keys from the platform")
        await wait_for_keys(store, bootstrap)
    keys = store.load()
    publisher = Publisher(bootstrap, client_id=f"reader-{keys.terminal_id}")
    await publisher.start()
    aids = {s.aid: s.provider for s in PROVIDERS.values()
            if s.kind == "emv" and s.provider in keys.card_auth_keys}
    agent = ReaderAgent(keys, publisher.send, aids=aids,
                        pin_source=scripted_pins(pin) if pin else interactive_pin)
    if amount is not None:
        agent.arm(amount, currency)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    tasks: set[asyncio.Task[object]] = set()

    async def tap(reader: str, atr: bytes) -> None:
        out = await agent.handle_card(reader, atr)
        if out.error:
            print(f"[{reader}] card not accepted: {out.error}")
        elif out.request is not None:
            print(f"[{reader}] {out.tap.masked_pan if out.tap else ''}: payment requested, "
                  f"{out.request.amount.amount} {out.request.amount.currency}")
        elif out.tap is not None:
            print(f"[{reader}] {out.tap.masked_pan}: tapped (no checkout armed)")
        if once and out.request is None:
            done.set()

    def on_card(reader: str, atr: bytes, _t: float) -> None:
        def start() -> None:
            task = loop.create_task(tap(reader, atr))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        loop.call_soon_threadsafe(start)

    watcher = ReaderWatcher(on_card).start()
    consumer = AIOKafkaConsumer(TERMINAL_RESULTS, bootstrap_servers=bootstrap,
                                group_id=f"reader-{keys.terminal_id}-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="latest")
    await consumer.start()
    try:
        while not done.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for msg in records:
                    if msg.key != keys.terminal_id.encode():
                        continue
                    try:
                        event = decode(TERMINAL_RESULTS, msg.value)
                    except DecodeError as exc:
                        log.warning("bad result record", error=str(exc))
                        continue
                    if isinstance(event, PaymentCompleted):
                        arpc = bytes.fromhex(event.arpc) if event.arpc else None
                        card = await agent.complete(event.correlation_id, event.approved, arpc)
                        print(f"{event.masked_pan}: {'APPROVED' if event.approved else 'DECLINED'}"
                              f" ({event.response_code}) {event.message}; {card}")
                        if once:
                            done.set()
    finally:
        watcher.stop()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await consumer.stop()
        await publisher.stop()
    return 0
