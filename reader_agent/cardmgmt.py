"""The terminal's side of card management: it asks the platform to manage the card in one of
its readers, relays the platform's protected APDUs to the card and the card's answers back, and
learns how it ended. It holds no issuer key and checks nothing of the secure channel (the card
and the platform do): ``cardbus.gp.session.relay`` is all it does with the APDUs.

    CardManagementRequested (terminal MAC) -> cardbus.card-management
    CardCommandsIssued (platform seal)     <- cardbus.card-commands    relay to the card
    CardResponsesRelayed (terminal MAC)    -> cardbus.card-management  ... until
    CardManagementCompleted (platform seal) <- cardbus.card-commands
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from cardbus.crypto.keystore import b64d, b64e
from cardbus.errors import BrokerError, CardError, CryptoError, DecodeError
from cardbus.gp import session as gp
from cardbus.logs import bind_correlation, get_logger
from cardbus.readers import reader_for
from reader_agent.dialogue import Link
from reader_agent.pcsc import CardLink, Context, wait_present
from reader_agent.runner import open_terminal
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from schemas.base import Event, header, new_event_id
from schemas.cardmgmt import (
    CardCommandsIssued,
    CardManagementCompleted,
    CardManagementRequested,
    CardOperation,
    CardResponsesRelayed,
    RelayedResponse,
)
from streams import clients
from streams.broker import resolve_bootstrap
from streams.codec import decode
from streams.topics import CARD_COMMANDS, CARD_MANAGEMENT

log = get_logger("reader_agent.cardmgmt")


class CommandFeed:
    """The platform's card-management commands for one terminal, from now on (no group, no
    commits), each checked against the platform's identity key."""

    def __init__(self, session: TerminalSession) -> None:
        self.session = session
        self.consumer: AIOKafkaConsumer | None = None
        self.waiting: list[Event] = []

    async def start(self) -> CommandFeed:
        consumer = clients.consumer(self.session.bootstrap, party="terminal")
        await consumer.start()
        if CARD_COMMANDS.name not in await consumer.topics():
            await consumer.stop()
            raise BrokerError(f"topic {CARD_COMMANDS.name} does not exist: run "
                              "`cardbus topics create`")
        tps = [TopicPartition(CARD_COMMANDS.name, p) for p in range(CARD_COMMANDS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # the end offsets now, before the request goes out
            await consumer.position(tp)
        self.consumer = consumer
        return self

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def next(self, session_id: str, timeout: float) -> Event | None:
        """The next command (or the end) of session ``session_id``; None after ``timeout``."""
        assert self.consumer is not None
        terminal = self.session.terminal
        key = terminal.terminal_id.encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200)
            for msg in (m for ms in batch.values() for m in ms if m.key == key):
                ev = accept_command(terminal, msg.value, offset=msg.offset)
                if ev is not None and ev.correlation_id == session_id:
                    return ev
        return None


def accept_command(terminal: Terminal, value: bytes | None, *, offset: int = -1
                   ) -> CardCommandsIssued | CardManagementCompleted | None:
    """A record of ``cardbus.card-commands`` this terminal may act on: decoded, for this
    terminal, and sealed by the platform (fail closed, like ``session.accept_result``);
    anything else is logged and set aside (None)."""
    try:
        ev = decode(CARD_COMMANDS.name, value)
        if not isinstance(ev, CardCommandsIssued | CardManagementCompleted):
            raise DecodeError(f"type: {ev.type} is not a card command")
        if ev.terminal_id != terminal.terminal_id:
            raise DecodeError(f"card command for terminal {ev.terminal_id}", field="terminal_id")
        terminal.check_platform(ev)
    except (DecodeError, CryptoError) as exc:
        log.warning("card command set aside", error=str(exc), offset=offset)
        return None
    return ev


async def manage_card(session: TerminalSession, link: Link, issuer_id: str,
                      operations: Sequence[CardOperation], *, timeout: float = 30.0
                      ) -> CardManagementCompleted:
    """One card-management session through ``link`` (the card stays in the reader)."""
    terminal = session.terminal
    tid = terminal.terminal_id
    sid = new_event_id()
    feed = await CommandFeed(session).start()
    try:
        with bind_correlation(sid, terminal=tid):
            request = terminal.hsm.mac_event(CardManagementRequested(
                **header(f"terminal:{tid}", sid), terminal_id=tid, issuer_id=issuer_id,
                operations=tuple(operations)))
            await session.publisher.send(CARD_MANAGEMENT.name, sid.encode(), request)
            log.info("card management requested", issuer=issuer_id,
                     operations=[op.action for op in operations])
            while True:
                ev = await feed.next(sid, timeout)
                if ev is None:
                    raise BrokerError(f"no answer from the platform in {timeout:.0f}s (is the "
                                      "platform worker running?)")
                if isinstance(ev, CardManagementCompleted):
                    return ev
                assert isinstance(ev, CardCommandsIssued)
                answers = await asyncio.to_thread(_relay, link, ev)
                await session.publisher.send(CARD_MANAGEMENT.name, sid.encode(),
                                             terminal.hsm.mac_event(CardResponsesRelayed(
                                                 **header(f"terminal:{tid}", sid,
                                                          datetime.now(UTC)),
                                                 terminal_id=tid, batch=ev.batch,
                                                 responses=answers)))
    finally:
        await feed.stop()


def _relay(link: Link, ev: CardCommandsIssued) -> tuple[RelayedResponse, ...]:
    steps = [gp.Step(b64d(s.apdu), s.label, tuple(s.expect)) for s in ev.steps]
    link.begin()  # a card step of its own: its deadline starts now, not at the last batch
    try:
        got = gp.relay(link.transmit, steps)
    except CardError as exc:
        raise CardError(f"card management: the card left the reader ({exc})") from None
    return tuple(RelayedResponse(data=b64e(data), sw=sw) for data, sw in got)


async def run_card_management(*, reader: int, issuer_id: str,
                              operations: Sequence[CardOperation], terminal_id: str | None,
                              bootstrap: str | None, timeout: float = 30.0
                              ) -> CardManagementCompleted:
    """``cardbus cards apps|install|lock|unlock|delete-app``: one session with the card in
    virtual reader ``reader``, as this machine's enrolled terminal."""
    terminal = open_terminal(terminal_id)
    name = reader_for(reader).name

    def connect() -> CardLink:
        ctx = Context()
        wait_present(ctx, name, timeout=10)
        return ctx.connect(name)

    async with TerminalSession(terminal, resolve_bootstrap(bootstrap)) as session:
        link = await asyncio.to_thread(connect)
        try:
            return await manage_card(session, link, issuer_id, operations, timeout=timeout)
        finally:
            await asyncio.to_thread(link.disconnect)
