"""The bridge's link and handler against the real jPOS host (``deploy/iso-host``), which shares
no code with it: approvals and declines as the host decides them (its own ARQC, PIN and funds
checks), timeouts reversed with 0400 then 0401 until answered, a dropped connection, duplicates,
malformed answers. No Kafka: the handler's tables are dicts, its publish a list."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.providers.base import IssuedCard
from agents.providers.iso8583 import messages
from agents.providers.iso8583.bridge import Bridge
from agents.providers.iso8583.link import Link, LinkSettings
from agents.providers.issuer import HsmIssuer
from cardbus.crypto import emv
from cardbus.crypto.signing import verify_event
from cardbus.response_codes import (
    APPROVED,
    EXPIRED_CARD,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    ISSUER_UNAVAILABLE,
    LOST_CARD,
)
from schemas.payments import AuthorizationDecided
from tests.agents.iso8583.bank import TERMINAL, IsoBank, now

pytestmark = [pytest.mark.isohost, pytest.mark.slow]


@dataclass
class Harness:
    bank: IsoBank
    link: Link
    bridge: Bridge
    published: list[Any] = field(default_factory=list)
    bad: list[tuple[bytes, str]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)
    chains: dict[str, Any] = field(default_factory=dict)

    async def pay(self, card: IssuedCard, amount: int, pin: str | None = "1234"
                  ) -> AuthorizationDecided:
        return await self.bridge.authorize(self.bank.request(card, amount, pin=pin), 0,
                                           self.answers, self.chains)

    async def balance(self, card: IssuedCard) -> int:
        answer = await self.link.request(messages.balance_inquiry(
            pan=card.profile.pan, terminal_id=TERMINAL, stan=self.link.next_stan(),
            sent_at=now()))
        assert answer["39"] == "00", answer
        return int(answer["54"][-12:])

    async def settled(self, card: IssuedCard, expected: int, timeout: float = 15) -> int:
        """The card's balance once it equals ``expected`` (or the last one seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.balance(card)
            if value == expected or loop.time() > deadline:
                return value
            await asyncio.sleep(0.2)

    def host_log(self) -> str:
        return (self.bank.home / "iso-host" / "host.log").read_text()


@pytest.fixture
async def h(iso_bank: IsoBank) -> AsyncIterator[Harness]:
    bad: list[tuple[bytes, str]] = []
    link = Link(LinkSettings(port=iso_bank.port, deadline=0.8, repeat_every=0.3,
                             echo_every=5.0), on_bad_frame=lambda raw, why: bad.append((raw, why)))
    published: list[Any] = []

    async def publish(_key: str, event: Any) -> None:
        published.append(event)

    bridge = Bridge("bank-iso", iso_bank.hsm,
                    HsmIssuer(iso_bank.hsm, iso_bank.world.platform.verifier), link, publish)
    await link.start()
    try:
        yield Harness(iso_bank, link, bridge, published, bad)
    finally:
        await link.stop()


async def test_approval_with_an_arpc_the_card_accepts(h: Harness) -> None:
    card = h.bank.issue(balance=10_000)
    req = h.bank.request(card, 2_500)
    d = await h.bridge.authorize(req, 0, h.answers, h.chains)
    assert d.response_code == APPROVED and d.auth_code and d.arpc, d
    # jPOS's ARPC (method 1, ARC = 00) checks out with the card's own session key
    sk = emv.derive_session_key(bytes.fromhex(card.profile.icc_master_key), req.card.atc)
    emv.verify_arpc_method1(sk, bytes.fromhex(req.card.arqc), b"00", bytes.fromhex(d.arpc))
    verify_event(d, lambda kid: h.bank.hsm.verifier if kid == h.bank.hsm.verifier.key_id
                 else None)
    assert h.published == [d] and d.sequence == 0 and d.chain_id == "bank-iso.p0"
    assert await h.balance(card) == 7_500
    second = await h.pay(card, 500)
    assert second.approved and second.sequence == 1 and second.prev_hash != d.prev_hash


async def test_declines_as_the_host_decides_them(h: Harness) -> None:
    card = h.bank.issue(balance=1_000)
    funds = await h.pay(card, 5_000)
    assert funds.response_code == INSUFFICIENT_FUNDS and funds.arpc is not None
    wrong_pin = await h.pay(card, 100, pin="9999")
    assert wrong_pin.response_code == INCORRECT_PIN and not wrong_pin.approved
    expired = h.bank.issue(balance=1_000)
    h.bank.flags(expired, expiry="2401")  # the host's record of the card says it expired
    assert (await h.pay(expired, 100)).response_code == EXPIRED_CARD
    lost = h.bank.issue(balance=1_000, status="lost")
    assert (await h.pay(lost, 100)).response_code == LOST_CARD
    assert await h.balance(card) == 1_000


async def test_timeout_answers_91_and_reverses_with_0400_then_0401_until_answered(
        h: Harness) -> None:
    card = h.bank.issue(balance=8_000, delay_ms=2_500, ignore_reversals=2)
    d = await h.pay(card, 3_000)
    assert d.response_code == ISSUER_UNAVAILABLE and not d.approved
    assert await h.settled(card, 8_000) == 8_000, h.host_log()[-3000:]
    log = h.host_log()
    assert log.count("ignored (card flag)") >= 2
    first = log.index("mti=0400")
    assert "mti=0401" in log[first:] and "reversal: released 3000" in log[first:], log[-3000:]
    assert h.link.stats.reversals_sent >= 3 and h.link.stats.reversals_done >= 1

    async def late() -> int:  # the host's delayed 0110 (approved) arrives after the deadline
        while h.link.stats.late_approvals == 0:
            await asyncio.sleep(0.1)
        return h.link.stats.late_approvals

    assert await asyncio.wait_for(late(), 10) == 1
    assert await h.settled(card, 8_000) == 8_000  # reversed again, idempotently at the host


async def test_connection_dropped_mid_flight_reconnects_and_reverses(h: Harness) -> None:
    dropped = h.bank.issue(balance=6_000, drop=True)
    connects = h.link.stats.connects
    d = await h.pay(dropped, 1_000)
    assert d.response_code == ISSUER_UNAVAILABLE
    ok = h.bank.issue(balance=6_000)
    assert (await h.pay(ok, 1_000)).approved  # over the new connection
    assert h.link.stats.connects > connects
    assert await h.settled(dropped, 6_000) == 6_000  # the host's hold was reversed


async def test_duplicate_request_reaches_the_host_once(h: Harness) -> None:
    card = h.bank.issue(balance=9_000)
    req = h.bank.request(card, 4_000)
    sent = h.link.stats.sent
    first, second = await asyncio.gather(
        h.bridge.authorize(req, 0, h.answers, h.chains),
        h.bridge.authorize(req, 0, h.answers, h.chains))
    third = await h.bridge.authorize(req, 0, h.answers, h.chains)
    assert first.approved and first == second == third
    assert h.link.stats.sent == sent + 1
    assert len(h.published) == 3 and {e.event_id for e in h.published} == {first.event_id}
    assert await h.balance(card) == 5_000


@pytest.mark.parametrize("mode", ["bad-bitmap", "short", "unknown-stan"])
async def test_malformed_answers_are_set_aside_and_the_link_carries_on(h: Harness,
                                                                       mode: str) -> None:
    card = h.bank.issue(balance=7_000, answer=mode)
    d = await h.pay(card, 700)
    assert d.response_code == ISSUER_UNAVAILABLE  # the answer never matched: a timeout
    assert len(h.bad) == 1, (h.bad, h.host_log()[-2000:])
    raw, reason = h.bad[0]
    assert card.profile.pan.encode() not in raw
    assert ("matches no request" in reason) == (mode == "unknown-stan")
    letter = h.bridge.dead_letter(raw, reason, 1)
    assert letter.error_code == "iso_frame" and letter.original_topic == "iso8583.bank-iso.host"
    assert await h.settled(card, 7_000) == 7_000  # the host's approval was reversed
    ok = h.bank.issue(balance=1_000)
    assert (await h.pay(ok, 100)).approved


def test_host_log_has_no_pan(iso_bank: IsoBank) -> None:
    text = Path(iso_bank.home / "iso-host" / "host.log").read_text()
    pans = [line for line in text.splitlines() if any(ch.isdigit() for ch in line)
            and "******" not in line and "card=" in line and "unknown" not in line]
    assert not pans, pans[:3]


def test_a_host_that_cannot_start_shows_its_log(tmp_path: Path, iso_libs: None) -> None:
    from agents.providers.iso8583.cardfile import card_file_path
    from cardbus.errors import IsoHostError
    from console.commands import isohost

    IsoBank(tmp_path)  # the bank's keys
    path = card_file_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("format=cardbus-iso-host-cards-v1\nnonce=AAAAAAAAAAAAAAAA\n"
                    f"ct={base64.urlsafe_b64encode(bytes(48)).decode()}\n")  # not under its key
    try:
        with pytest.raises(IsoHostError, match="does not open under the host's key"):
            isohost.start(tmp_path, port=isohost.free_port())
        assert isohost.status(tmp_path) is None
    finally:
        isohost.stop(tmp_path)


class Proxy:
    """A TCP relay in front of the host that the test can take down and bring back."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()
        self.writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host_reader, host_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, host_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, host_writer), pipe(host_reader, writer),
                             return_exceptions=True)


async def test_host_unreachable_then_back_reconnects_with_backoff(iso_bank: IsoBank) -> None:
    from console.commands.isohost import free_port

    proxy = Proxy(free_port(), iso_bank.port)
    link = Link(LinkSettings(port=proxy.port, deadline=0.8, backoff_max=0.4))

    async def none(_key: str, _event: Any) -> None:
        return None

    bridge = Bridge("bank-iso", iso_bank.hsm,
                    HsmIssuer(iso_bank.hsm, iso_bank.world.platform.verifier), link, none)
    card = iso_bank.issue(balance=3_000)

    async def pay(amount: int) -> AuthorizationDecided:
        return await bridge.authorize(iso_bank.request(card, amount), 0, {}, {})

    await link.start(wait=None)
    try:
        down = await pay(100)
        assert down.response_code == ISSUER_UNAVAILABLE
        assert link.stats.reversals_sent == 0  # never on the wire: nothing to reverse
        await proxy.up()
        await asyncio.wait_for(until(lambda: link.connected), 5)
        assert (await pay(200)).approved
        await proxy.down()  # the connection drops
        await asyncio.wait_for(until(lambda: not link.connected), 5)
        await proxy.up()
        await asyncio.wait_for(until(lambda: link.connected), 5)
        assert (await pay(300)).approved
        assert link.stats.connects == 2
    finally:
        await link.stop()
        await proxy.down()


async def until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.05)
