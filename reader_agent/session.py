"""A terminal on the bus: enroll, publish taps and payment requests, await the results.

``TerminalSession`` is the client side of the patent's terminal: it publishes with an
idempotent ``acks=all`` producer (``Publisher``, with its outbox), reads its key set from the
compacted ``cardbus.terminal-keys`` topic, and reads ``cardbus.terminal-results`` (keyed by
terminal id) from the moment it starts, resolving each payment's future by its payment id.
It reads without a consumer group and commits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from cardbus.errors import BrokerError, CryptoError, DecodeError
from cardbus.logs import get_logger
from reader_agent.outcome import await_outcome
from reader_agent.publisher import Publisher
from reader_agent.terminal import Terminal
from schemas.base import Event, header
from schemas.cards import CardTapped
from schemas.cardstatus import IssuerScriptApplied
from schemas.payments import PaymentCancelled, PaymentCompleted, PaymentRequested
from schemas.terminals import TerminalKeysIssued
from schemas.transit import TransitLoadAuthorized, TransitLoadConfirmed
from streams import clients
from streams.codec import decode
from streams.topics import (
    KEY_HISTORY,
    PAYMENT_REQUESTS,
    TAPS,
    TERMINAL_KEYS,
    TERMINAL_RESULTS,
    TERMINALS,
    TRANSIT_LOADS,
    topic_spec,
)

log = get_logger("reader_agent.session")


async def _reader(bootstrap: str, topic: str, *, from_start: bool) -> AIOKafkaConsumer:
    consumer = clients.consumer(bootstrap, party="terminal")
    await consumer.start()
    if topic not in await consumer.topics():
        await consumer.stop()
        raise BrokerError(f"topic {topic} does not exist: run `cardbus topics create`")
    tps = [TopicPartition(topic, p) for p in range(topic_spec(topic).partitions)]
    consumer.assign(tps)
    if from_start:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is published
            await consumer.position(tp)
    return consumer


class TerminalSession:
    """One terminal's connection to the bus."""

    def __init__(self, terminal: Terminal, bootstrap: str) -> None:
        self.terminal = terminal
        self.bootstrap = bootstrap
        self.publisher = Publisher(bootstrap, client_id=f"terminal-{terminal.terminal_id}",
                                   party="terminal")
        self._results: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Event]] = {}
        self.unmatched: list[Event] = []

    async def start(self) -> TerminalSession:
        await self.publisher.start()
        try:
            self._results = await _reader(self.bootstrap, TERMINAL_RESULTS.name,
                                          from_start=False)
        except BaseException:
            await self.publisher.producer.stop()
            raise
        self._task = asyncio.create_task(self._read_results())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._results is not None:
            await self._results.stop()
        await self.publisher.stop()

    async def __aenter__(self) -> TerminalSession:
        return await self.start()

    async def __aexit__(self, *_: Any) -> None:
        await self.stop()

    # -- enrollment ------------------------------------------------------------------------------

    async def enroll(self, timeout: float = 60.0, *, providers: int = 1) -> None:
        """Publish the enrollment and install the keys the platform issues, until the key set
        vouches for at least ``providers`` providers. A new terminal is suspended until an
        operator activates it (``until_active``)."""
        ev = self.terminal.enrollment(datetime.now(UTC))
        # the key history first (kept in full): nothing sealed with the key precedes it there
        await self.publisher.send(KEY_HISTORY.name, self.terminal.terminal_id.encode(), ev)
        await self.publisher.send(TERMINALS.name, self.terminal.terminal_id.encode(), ev)
        await self._follow_keys(
            lambda: self.terminal.ready and len(self.terminal.card_auth) >= providers, timeout,
            f"no keys for terminal {self.terminal.terminal_id} within {timeout:.0f}s: is the "
            "platform worker running?")
        log.info("terminal enrolled", terminal=self.terminal.terminal_id,
                 providers=sorted(self.terminal.card_auth), status=self.terminal.status)

    async def until_active(self, timeout: float = 60.0) -> None:
        """Wait until the platform's key set says this terminal is active (an operator
        activated it)."""
        await self._follow_keys(
            lambda: self.terminal.status == "active", timeout,
            f"terminal {self.terminal.terminal_id} not activated within {timeout:.0f}s: an "
            f"operator activates it (`cardbus terminal activate --terminal-id "
            f"{self.terminal.terminal_id}`)")

    async def _follow_keys(self, done: Callable[[], bool], timeout: float, why: str) -> None:
        """Install every key set the platform issues to this terminal until ``done()``."""
        keys = await _reader(self.bootstrap, TERMINAL_KEYS.name, from_start=True)
        try:
            tid = self.terminal.terminal_id.encode()
            async with asyncio.timeout(timeout):
                while not done():
                    batch = await keys.getmany(timeout_ms=200)
                    for msg in (m for ms in batch.values() for m in ms):
                        if msg.key != tid:
                            continue
                        try:
                            issued = decode(TERMINAL_KEYS.name, msg.value)
                            if isinstance(issued, TerminalKeysIssued):
                                self.terminal.apply_keys(issued)
                        except (DecodeError, CryptoError) as exc:
                            # an older key set (another platform key, another terminal key)
                            # or a forged one: never installed, and enrollment goes on
                            log.warning("key set not installed", offset=msg.offset,
                                        reason=str(exc))
        except TimeoutError:
            raise BrokerError(why) from None
        finally:
            await keys.stop()

    # -- payments ---------------------------------------------------------------------------------

    def expect(self, correlation_id: str) -> asyncio.Future[Event]:
        """A future for the next result about ``correlation_id`` (a result that arrived while
        nobody waited resolves it at once, oldest first)."""
        fut = self._waiting.get(correlation_id)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            for i, ev in enumerate(self.unmatched):
                if ev.correlation_id == correlation_id:
                    fut.set_result(self.unmatched.pop(i))
                    return fut
            self._waiting[correlation_id] = fut
        return fut

    async def publish_tap(self, tapped: CardTapped) -> None:
        await self.publisher.send(TAPS.name, self.terminal.terminal_id.encode(), tapped)

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]:
        """Publish a payment request; the future resolves with its ``PaymentCompleted``."""
        fut = self.expect(req.correlation_id)
        await self.publisher.send(PAYMENT_REQUESTS.name, req.card.pan_token.encode(), req)
        return fut

    async def cancel(self, req: PaymentRequested, reason: str = "no_answer") -> None:
        """Give up on ``req``: the platform reverses whatever the bank decided for it."""
        ev = self.terminal.hsm.mac_event(PaymentCancelled(
            **header(f"terminal:{self.terminal.terminal_id}", req.correlation_id),
            terminal_id=self.terminal.terminal_id, request_event_id=req.event_id,
            pan_token=req.card.pan_token, reason=reason))  # type: ignore[arg-type]
        await self.publisher.send(PAYMENT_REQUESTS.name, req.card.pan_token.encode(), ev)

    async def report_script(self, applied: IssuerScriptApplied) -> None:
        """What the card answered to its issuer's script (for the platform, then the issuer)."""
        await self.publisher.send(PAYMENT_REQUESTS.name, applied.pan_token.encode(), applied)

    async def pay(self, req: PaymentRequested, timeout: float = 30.0) -> PaymentCompleted | None:
        """Request and wait for the answer, resending meanwhile; None (and the payment
        cancelled) when none came in ``timeout`` seconds."""
        done = await await_outcome(self, req, await self.request(req), deadline=timeout)
        assert done is None or isinstance(done, PaymentCompleted)
        return done

    async def publish_load(self, event: Event, key: str) -> None:
        await self.publisher.send(TRANSIT_LOADS.name, key.encode(), event)

    async def _read_results(self) -> None:
        assert self._results is not None
        tid = self.terminal.terminal_id.encode()
        while True:
            batch = await self._results.getmany(timeout_ms=500)
            for msg in (m for ms in batch.values() for m in ms):
                if msg.key != tid:
                    continue
                ev = accept_result(self.terminal, msg.value, offset=msg.offset)
                if ev is None:
                    continue
                fut = self._waiting.pop(ev.correlation_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
                else:
                    self.unmatched.append(ev)


def accept_result(terminal: Terminal, value: bytes | None, *, offset: int = -1
                  ) -> Event | None:
    """A result from ``cardbus.terminal-results`` this terminal may act on: decoded, for this
    terminal, and sealed by the platform; anything else is logged and set aside (None)."""
    try:
        ev = decode(TERMINAL_RESULTS.name, value)
        if not isinstance(ev, PaymentCompleted | TransitLoadAuthorized | TransitLoadConfirmed):
            raise DecodeError(f"type: {ev.type} is not a result")
        if isinstance(ev, PaymentCompleted) and ev.terminal_id != terminal.terminal_id:
            raise DecodeError(f"result for terminal {ev.terminal_id}", field="terminal_id")
        terminal.check_platform(ev)
    except (DecodeError, CryptoError) as exc:
        log.warning("result set aside", error=str(exc), offset=offset)
        return None
    return ev
