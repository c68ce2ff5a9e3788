"""The platform as the cards' application manager, handler by handler, without a broker: an
issuer's policy, a terminal's request, the transit operator's purse, the secure channel's APDUs
relayed to a real multi-application card applet (in process) and its answers back; refusals.
What each hop would put on the bus is what the handlers send here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.platform.decide import Rejected
from agents.providers.announce import card_policy
from agents.providers.bank_a import adapter as bank_a
from agents.providers.bank_b import adapter as bank_b
from agents.providers.transit import Purse
from agents.providers.transit import adapter as transit_operator
from cardbus.cardprofile import CardProfile
from cardbus.crypto import transit as transit_crypto
from cardbus.crypto.keystore import b64d, b64e
from cardbus.errors import CryptoError
from cardbus.gp.card import ISD_AID, AppLife
from cards import applet_for
from cards.content import CardContent
from reader_agent.cardmgmt import _relay
from reader_agent.dialogue import AppletLink, init_load, read_purse
from schemas.base import header
from schemas.cardmgmt import (
    CardCommandsIssued,
    CardManagementCompleted,
    CardManagementRequested,
    CardOperation,
    CardResponsesRelayed,
    PursePersonalisationPrepared,
    PursePersonalisationRequested,
)
from streams.topics import (
    CARD_COMMANDS,
    CARD_MANAGEMENT,
    CARD_POLICIES,
    PROVIDER_RESULTS,
    provider_requests_topic,
)
from tests.agents.conftest import NOW
from tests.agents.harness import Network, rec

T = "T-0001"
PURSE_AID = "A000000632010105"


@pytest.fixture
async def net() -> Network:
    network = Network(NOW)
    for adapter in (bank_a, transit_operator):
        await network.join(adapter)
    await network.enroll(T)
    bank = network.providers["bank-a"]
    await network.platform.cards.on_policy(
        rec(card_policy(bank_a, bank.hsm, NOW), topic=CARD_POLICIES.name))
    network.sent.take()
    return network


def _card(net: Network, home: Path) -> tuple[CardProfile, Any]:
    bank = net.providers["bank-a"]
    profile = bank_a.issue_card(bank.hsm, pin="1234", opening_balance=10_000).profile
    return profile, applet_for(profile, home)


def _request(net: Network, *ops: CardOperation, issuer: str = "bank-a",
             terminal: str = T) -> CardManagementRequested:
    return net.terminals[T].mac_event(CardManagementRequested(
        **header(f"terminal:{terminal}", f"s-{len(net.sent.items)}-{ops[0].action}", NOW),
        terminal_id=terminal, issuer_id=issuer, operations=ops))


async def _run(net: Network, req: CardManagementRequested, applet: Any,
               tamper: Any = None, seen: list[bytes] | None = None) -> CardManagementCompleted:
    """The whole session as the bus would carry it: platform, operator, terminal relay
    (``seen``: every event's bytes, as they would be on the bus)."""
    platform, link = net.platform, AppletLink(applet)
    await platform.cards.on_message(rec(req, topic=CARD_MANAGEMENT.name))
    for _ in range(20):
        out = net.sent.take()
        for topic, _key, ev in out:
            if seen is not None:
                seen.append(rec(ev).value)
            if topic == provider_requests_topic("transit"):
                await net.deliver([(topic, _key, ev)])
            elif topic == PROVIDER_RESULTS.name:
                assert isinstance(ev, PursePersonalisationPrepared)
                await platform.on_result(rec(ev, topic=PROVIDER_RESULTS.name))
            elif isinstance(ev, CardManagementCompleted):
                return ev
            elif isinstance(ev, CardCommandsIssued):
                answers = _relay(link, ev)
                if tamper is not None:
                    answers = tamper(ev, answers)
                await platform.cards.on_message(rec(net.terminals[T].mac_event(
                    CardResponsesRelayed(**header(f"terminal:{T}", req.correlation_id, NOW),
                                         terminal_id=T, batch=ev.batch,
                                         responses=answers)), topic=CARD_MANAGEMENT.name))
    raise AssertionError("the session did not end")


async def test_install_transit_through_the_platform_and_the_operator_loads_it(
        net: Network, tmp_path: Path) -> None:
    profile, applet = _card(net, tmp_path)
    req = _request(net, CardOperation(action="install", app="transit"))
    await net.platform.cards.on_message(rec(req, topic=CARD_MANAGEMENT.name))
    (topic, key, ask), = net.sent.take()  # first the operator is asked for a purse
    assert topic == provider_requests_topic("transit") and key == req.correlation_id
    assert isinstance(ask, PursePersonalisationRequested) and ask.seal is not None
    net.platform.cards.sessions.clear()
    seen: list[bytes] = []
    done = await _run(net, req, applet, seen=seen)
    assert done.ok, done.reason
    assert done.installed == (PURSE_AID,) and done.card_life == "SECURED"
    listed = {a.aid: a for a in done.applications}
    assert listed[PURSE_AID].kind == "application" and listed[PURSE_AID].life == \
        AppLife.PERSONALIZED
    assert listed[ISD_AID.hex().upper()].kind == "security_domain"
    assert done.seal is not None and done.steps_relayed > 5
    assert net.platform.cards.sessions == {}  # the channel keys are gone with the session
    # the operator knows the purse: its token is in its purse records, and the card's load MAC
    # verifies under the operator's keys (the keys the platform wrote to the card)
    operator = net.providers["transit"]
    link = AppletLink(applet_for(profile, tmp_path))
    purse = read_purse(link, PURSE_AID)
    assert Purse.model_validate(operator.t.purses[purse.card_token]).card_token == \
        purse.card_token
    init = init_load(link, 2_000, T)
    operator.hsm.authorize_load(purse.card_token, init.random, init.online_seq, init.balance,
                                2_000, T, transit_crypto.card_time(NOW), init.mac1)
    # nothing of the purse in clear on the bus: its number encrypted to the platform, then
    # under the card's session key (C-DECRYPTION); its keys in TR-31, then under Key-DEK
    perso = CardContent.for_profile(profile, tmp_path).instance(bytes.fromhex(PURSE_AID))
    assert perso is not None and len(seen) > 5
    number = bytes.fromhex(perso.perso["0101"])
    keys = [bytes.fromhex(perso.perso[dgi]) for dgi in ("8001", "8002")]
    for wire in seen:
        assert number not in wire
        for k in keys:
            assert k.hex().upper().encode() not in wire and b64e(k)[:20].encode() not in wire


async def test_listing_and_locking_follow_the_issuers_policy(net: Network,
                                                             tmp_path: Path) -> None:
    profile, applet = _card(net, tmp_path)
    done = await _run(net, _request(net, CardOperation(action="list")), applet)
    assert done.ok and {a.aid for a in done.applications} >= {profile.aid.upper()}
    # its own payment application is protected: the policy refuses before any APDU
    done = await _run(net, _request(net, CardOperation(action="lock", aid=profile.aid)), applet)
    assert not done.ok and "does not allow" in done.reason and done.steps_relayed == 0
    # locking the card is not allowed by bank-a's policy either
    done = await _run(net, _request(net, CardOperation(action="lock_card")), applet)
    assert not done.ok and "locking its cards" in done.reason


async def test_an_issuer_without_a_policy_or_keys_gets_nothing_done(net: Network,
                                                                    tmp_path: Path) -> None:
    _profile, applet = _card(net, tmp_path)
    await net.join(bank_b)  # registered and provisioned, but no policy published
    net.sent.take()
    done = await _run(net, _request(net, CardOperation(action="list"), issuer="bank-b"),
                      applet)
    assert not done.ok and "no card-management policy" in done.reason
    done = await _run(net, _request(net, CardOperation(action="list"), issuer="bank-z"),
                      applet)
    assert not done.ok and "not an issuer" in done.reason


async def test_the_wrong_issuer_for_the_card_fails_at_the_card_cryptogram(
        net: Network, tmp_path: Path) -> None:
    _profile, applet = _card(net, tmp_path)
    bank_b_hsm = (await net.join(bank_b)).hsm
    await net.platform.cards.on_policy(rec(card_policy(bank_b, bank_b_hsm, NOW),
                                           topic=CARD_POLICIES.name))
    net.sent.take()
    done = await _run(net, _request(net, CardOperation(action="list"), issuer="bank-b"),
                      applet)
    assert not done.ok and done.failed_step == "initialize update"
    assert "does not verify" in done.reason  # the card's challenge under bank-b's keys


async def test_a_tampered_card_answer_fails_the_session(net: Network, tmp_path: Path) -> None:
    _profile, applet = _card(net, tmp_path)

    def flip_the_last_answer(ev: CardCommandsIssued, answers: Any) -> Any:
        if ev.batch < 2 or not answers or not answers[-1].data:
            return answers
        last = answers[-1]
        data = b64d(last.data)
        return (*answers[:-1], last.model_copy(update={
            "data": b64e(data[:-1] + bytes([data[-1] ^ 1]))}))

    done = await _run(net, _request(net, CardOperation(action="list")), applet,
                      flip_the_last_answer)
    assert not done.ok and done.failed_step is not None and "MAC" in done.reason


async def test_forged_requests_and_answers_are_refused(net: Network, tmp_path: Path) -> None:
    req = _request(net, CardOperation(action="list"))
    forged = req.model_copy(update={"issuer_id": "bank-b"})  # MAC over other content
    with pytest.raises(Rejected, match="terminal MAC"):
        await net.platform.cards.on_message(rec(forged, topic=CARD_MANAGEMENT.name))
    # answers for a session the platform does not hold: told to start again
    stray = net.terminals[T].mac_event(CardResponsesRelayed(
        **header(f"terminal:{T}", "no-such-session", NOW), terminal_id=T, batch=1,
        responses=()))
    await net.platform.cards.on_message(rec(stray, topic=CARD_MANAGEMENT.name))
    (topic, key, done), = net.sent.take()
    assert topic == CARD_COMMANDS.name and key == T
    assert isinstance(done, CardManagementCompleted) and not done.ok
    assert "run the command again" in done.reason


async def test_the_operators_purse_is_the_same_for_a_repeated_request(net: Network) -> None:
    operator = net.providers["transit"]
    ask = net.platform_hsm.sign_event(PursePersonalisationRequested(
        **header("platform", "s-1", NOW, event_id="a" * 32), operator_id="transit",
        issuer_id="bank-a", terminal_id=T, app="transit"))
    topic = provider_requests_topic("transit")
    await operator.on_request(rec(ask, topic=topic))
    await operator.on_request(rec(ask, topic=topic))
    first, again = (ev for _t, _k, ev in net.sent.take())
    assert first == again and isinstance(first, PursePersonalisationPrepared)
    assert first.load_key.key_block.startswith("D") and first.load_key.usage == "card_perso"
    assert first.number_encrypted.key_id.startswith("pan:transit.v")
    unsigned = ask.model_copy(update={"seal": None, "event_id": "b" * 32})
    with pytest.raises(CryptoError):  # not the platform's: dead-lettered, no purse
        await operator.on_request(rec(unsigned, topic=topic))
