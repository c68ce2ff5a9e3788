"""The reader agent end to end: real pcscd + vpcd cards, real Kafka broker."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from psec.pinblock import decipher_pinblock_iso_4

from bench.reader import TopicBus, standalone_terminal
from cardbus.crypto import emv
from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import memory_keystore
from cardbus.crypto.pan import PanCipher
from cards.hostile import HostileApplet
from reader_agent.agent import Armed, ReaderAgent, scripted_pins
from reader_agent.pcsc import Context, wait_present
from reader_agent.publisher import Publisher
from reader_agent.watcher import ReaderWatcher
from schemas.base import contains_clear_pan
from schemas.cards import CardTapped
from schemas.payments import PaymentRequested
from tests.kafka_auth import operator
from tests.reader_agent.conftest import aids, imk

pytestmark = [pytest.mark.pcsc, pytest.mark.broker]


async def _read_all(bootstrap: str, topic: str, expect: int, timeout: float = 10) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, **operator(bootstrap), bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < expect:
            batch = await consumer.getmany(timeout_ms=300)
            out += [m.value for recs in batch.values() for m in recs]
        # a little longer, to see anything extra (duplicates)
        batch = await consumer.getmany(timeout_ms=500)
        out += [m.value for recs in batch.values() for m in recs]
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def agent_setup(kafka_bootstrap, issuers):
    platform = PlatformHsm(memory_keystore())
    terminal = standalone_terminal({p: h for p, h in issuers.items() if p != "transit"},
                                   "T-TEST", platform)
    suffix = uuid.uuid4().hex[:8]
    pub = Publisher(kafka_bootstrap, party="operator")  # the test's own topics
    await pub.start()
    bus = TopicBus(pub, f"test.taps.{suffix}", f"test.requests.{suffix}")
    agent = ReaderAgent(terminal, bus, aids=aids(), pin_source=scripted_pins("4321"))
    yield agent, platform, bus, kafka_bootstrap
    await pub.stop()


async def test_tap_publishes_card_tapped_and_payment_request(pcscd, make_card, issuers,
                                                             agent_setup):
    agent, platform, bus, bootstrap = agent_setup
    profile, card = make_card("bank-b", pcscd[1])
    await asyncio.to_thread(wait_present, Context(), pcscd[1].name)
    out = await agent.handle_card(pcscd[1].name, card.applet.atr,
                                  Armed(2599, "CNY", agent.terminal.merchant))
    assert out.error is None and out.request is not None
    await agent.release(out.request.correlation_id)
    taps = await _read_all(bootstrap, bus.taps_topic, 1)
    reqs = await _read_all(bootstrap, bus.requests_topic, 1)
    assert len(taps) == 1 and len(reqs) == 1  # no duplicates
    for raw in taps + reqs:
        assert not contains_clear_pan(raw.decode())
    tapped = CardTapped.model_validate_json(taps[0])
    req = PaymentRequested.model_validate_json(reqs[0])
    for ev in (tapped, req):  # the platform checks the terminal MAC it issued
        platform.verify_terminal_mac("T-TEST", ev)
        assert ev.producer == "terminal:T-TEST" and ev.terminal_id == "T-TEST"
    assert tapped.correlation_id == req.correlation_id
    c = req.card
    assert c == tapped.card
    assert c.aid == profile.aid and c.masked_pan == profile.masked()
    assert c.pan_token == profile.pan_token and c.atc == 1 and c.card_auth == "passed"
    assert req.amount.amount == 2599 and req.amount.currency == "CNY"
    assert req.purpose == "purchase"
    # The platform opens the PAN (tpan key, bound to the payment id) and the PIN block (tpk).
    pan_vid = c.pan_encrypted.key_id
    assert pan_vid.startswith("tpan:T-TEST.v")
    pan = PanCipher(pan_vid, platform.keys.key("tpan:T-TEST", KeyUsage.PAN_ENC, version=1)
                    ).decrypt(c.pan_encrypted, req.correlation_id)
    assert pan == profile.pan
    assert platform.bin_of("T-TEST", c.pan_encrypted, req.correlation_id) == pan[:6]
    # The provider recomputes the ARQC from the request fields.
    emv.verify_card_arqc(imk(issuers["bank-b"]), pan, c.psn, c.atc, bytes.fromhex(c.cdol_data),
                         bytes.fromhex(c.arqc))
    assert req.pin_key_id and req.pin_key_id.startswith("tpk:T-TEST.v")
    tpk = platform.keys.key("tpk:T-TEST", KeyUsage.PIN_ENC, version=1)
    assert decipher_pinblock_iso_4(tpk, bytes.fromhex(req.pin_block or ""), pan) == "4321"
    # Second tap: the ATC went up, and without a checkout there is no payment request.
    out2 = await agent.handle_card(pcscd[1].name, card.applet.atr)
    assert out2.tapped is not None and out2.tapped.card.atc == 2 and out2.request is None


async def test_hostile_card_makes_no_payment_request(pcscd, make_card, agent_setup):
    agent, _platform, bus, bootstrap = agent_setup
    make_card("bank-a", pcscd[2], applet=HostileApplet("garbage"))
    await asyncio.to_thread(wait_present, Context(), pcscd[2].name)
    armed = Armed(100, "CNY", agent.terminal.merchant)
    agent.armed = armed
    out = await agent.handle_card(pcscd[2].name, b"")
    assert out.error and out.error.startswith("card:") and out.request is None
    assert agent.armed == armed  # the checkout waits for a good card
    assert await _read_all(bootstrap, bus.requests_topic, 0, timeout=1) == []


def test_watcher_survives_pcscd_restart(pcscd_daemon, pcscd, make_card):
    if pcscd_daemon is None:
        pytest.skip("pcscd was not started by this session; not restarting someone else's")
    seen: list[str] = []
    watcher = ReaderWatcher(lambda name, _atr, _t: seen.append(name)).start()
    try:
        _p, card = make_card("bank-a", pcscd[3])
        deadline = time.monotonic() + 5
        while pcscd[3].name not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pcscd[3].name in seen
        pcscd_daemon.stop()  # drops every card
        card.remove()
        pcscd_daemon.start()
        seen.clear()
        card.insert()
        deadline = time.monotonic() + 10
        while pcscd[3].name not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pcscd[3].name in seen and watcher.restarts >= 1
    finally:
        watcher.stop()
