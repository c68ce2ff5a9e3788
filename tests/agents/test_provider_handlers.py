"""A provider's handlers, every event type of its request topic, without a broker; and a whole
payment and a whole top-up hop by hop through the platform's and the providers' handlers."""

from __future__ import annotations

from typing import Any

import pytest

from agents.providers.bank_a import adapter as bank_a
from agents.providers.base import card_issued_event
from agents.providers.settle import cutover_events
from agents.providers.state import Account
from agents.providers.transit import adapter as transit_operator
from cardbus.errors import CryptoError, DecodeError
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, credit_load, init_load, read_purse
from schemas.base import header
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCompleted,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.settlement import SettlementBatchClosed
from schemas.transit import (
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)
from streams.topics import (
    PROVIDER_RESULTS,
    SETTLEMENTS,
    TERMINAL_RESULTS,
    TRANSIT_LOADS,
    provider_requests_topic,
)
from tests.agents.conftest import NOW
from tests.agents.harness import Network, Rec, only, rec

T = "T-0001"
BANK_TOPIC = provider_requests_topic("bank-a")


@pytest.fixture
async def net() -> Network:
    network = Network(NOW)
    await network.join(bank_a)
    await network.join(transit_operator)
    await network.enroll(T)
    network.sent.take()
    return network


def _available(account: dict[str, Any]) -> int:
    return Account.model_validate(account).available


async def _authorization(net: Network, amount: int, pin: str = "1234",
                         purpose: str = "purchase") -> tuple[AuthorizationRequested, str]:
    card = await net.issue("bank-a", balance=10_000)
    req = net.request(T, card, amount, pin=pin, purpose=purpose)
    await net.platform.on_request(rec(req))
    (_topic, _key, auth), = net.sent.take()
    assert isinstance(auth, AuthorizationRequested)
    return auth, card.card.pan_token


async def test_card_issued_opens_the_ledger_and_needs_the_providers_own_seal(net: Network
                                                                           ) -> None:
    provider = net.providers["bank-a"]
    card = provider.adapter.issue_card(provider.hsm, pin="1234", opening_balance=2_500)
    opened = card_issued_event(card, provider.hsm, NOW)
    unsealed = opened.model_copy(update={"seal": None})
    with pytest.raises(CryptoError):
        await provider.on_request(rec(unsealed, topic=BANK_TOPIC))
    assert card.card.pan_token not in provider.t.ledger
    await provider.on_request(rec(opened, topic=BANK_TOPIC))
    assert provider.t.ledger[card.card.pan_token]["account"]["balance"] == 2_500


async def test_authorization_holds_funds_once_and_answers_a_duplicate_the_same(net: Network
                                                                              ) -> None:
    provider = net.providers["bank-a"]
    auth, token = await _authorization(net, 1_500)
    await provider.on_request(rec(auth, topic=BANK_TOPIC, partition=3))
    (topic, key, decision), = net.sent.take()
    assert topic == PROVIDER_RESULTS.name and key == token
    assert isinstance(decision, AuthorizationDecided) and decision.approved
    account = provider.t.ledger[token]["account"]
    assert _available(account) == 10_000 - 1_500
    assert set(provider.t.partition) == {"p3"}  # its chain head and open batch: one record
    part = provider.t.partition["p3"]
    assert part["chain"]["sequence"] == 0 and part["batch"]["totals"]["CNY"]["approved_count"] == 1
    chain_before = dict(provider.t.partition)
    await provider.on_request(rec(auth, topic=BANK_TOPIC, partition=3))
    (_t, _k, again), = net.sent.take()
    assert again == decision
    assert provider.t.partition == chain_before
    assert provider.t.ledger[token]["account"] == account


async def test_wrong_pin_is_declined_55(net: Network) -> None:
    provider = net.providers["bank-a"]
    auth, token = await _authorization(net, 900, pin="9999")
    await provider.on_request(rec(auth, topic=BANK_TOPIC))
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    assert decision.response_code == "55" and not decision.approved
    assert _available(provider.t.ledger[token]["account"]) == 10_000


async def test_reversal_releases_the_hold_and_needs_the_platform_seal(net: Network) -> None:
    provider = net.providers["bank-a"]
    auth, token = await _authorization(net, 2_000)
    await provider.on_request(rec(auth, topic=BANK_TOPIC))
    net.sent.take()
    reversal = ReversalRequested(
        **header("platform", auth.correlation_id, NOW), provider_id="bank-a",
        original_event_id=auth.event_id, pan_token=token, amount=auth.amount, reason="timeout")
    with pytest.raises(CryptoError):
        await provider.on_request(rec(reversal, topic=BANK_TOPIC))
    await provider.on_request(rec(net.platform_hsm.sign_event(reversal), topic=BANK_TOPIC))
    answer = only([ev for _t, _k, ev in net.sent.take()], ReversalCompleted)
    assert answer.reversed
    assert _available(provider.t.ledger[token]["account"]) == 10_000


async def test_cutover_closes_the_partitions_batch(net: Network) -> None:
    provider = net.providers["bank-a"]
    auth, _token = await _authorization(net, 3_000)
    await provider.on_request(rec(auth, topic=BANK_TOPIC, partition=0))
    net.sent.take()
    for partition, cut in cutover_events(provider.hsm, "bank-a-test", NOW, 1):
        await provider.on_request(rec(cut, topic=BANK_TOPIC, partition=partition))
    closed = only(net.sent.on(SETTLEMENTS.name), SettlementBatchClosed)
    assert closed.batch_id == "bank-a-test.p0"
    assert [(t.currency, t.approved_count, t.approved_amount) for t in closed.totals] == [
        ("CNY", 1, 3_000)]


async def test_unknown_and_misplaced_events_are_decode_errors(net: Network) -> None:
    provider = net.providers["bank-a"]
    with pytest.raises(DecodeError):
        await provider.on_request(Rec(b'{"type": "Nonsense"}'))
    # a transit load step sent to a bank is refused by type, not crashed on
    forwarded = await _top_up_until_load_request(net)
    with pytest.raises(DecodeError, match="not a transit operator"):
        await provider.on_load(forwarded)


async def _top_up_until_load_request(net: Network) -> TransitLoadRequested:
    auth, _token = await _authorization(net, 5_000, purpose="transit_load")
    await net.deliver([(BANK_TOPIC, None, auth)])
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
    done = only(net.sent.on(TERMINAL_RESULTS.name), PaymentCompleted)
    assert done.approved
    net.sent.take()
    operator = net.providers["transit"]
    purse = transit_operator.issue_transit_card(operator.hsm, balance=1_000)
    state = CardState(None, balance=1_000, online_seq=0)
    link = AppletLink(applet_for(purse, state=state))
    net.purse_link = link  # type: ignore[attr-defined]
    card_token = read_purse(link, purse.aid).card_token
    init = init_load(link, 5_000, T)
    pending = net.platform_tables.pending[auth.correlation_id]["state"]
    ev = TransitLoadRequested(
        **header(f"terminal:{T}", auth.correlation_id, NOW), terminal_id=T,
        operator_id="transit", funding_payment_id=auth.correlation_id,
        funding_pan_token=pending["pan_token"], aid=purse.aid, card_token=card_token,
        amount=auth.amount, balance_before=init.balance, load_counter=init.online_seq,
        card_random=init.random.hex().upper(), mac1=init.mac1.hex().upper())
    await net.platform.on_load(rec(net.terminals[T].mac_event(ev), topic=TRANSIT_LOADS.name))
    forwarded = only([e for _t, _k, e in net.sent.take()], TransitLoadRequested)
    assert forwarded.producer == "platform"
    return forwarded


async def test_a_whole_top_up_through_the_handlers(net: Network) -> None:
    operator = net.providers["transit"]
    forwarded = await _top_up_until_load_request(net)
    await operator.on_request(rec(forwarded, topic=operator.topic))
    authorized = only([e for _t, _k, e in net.sent.take()], TransitLoadAuthorized)
    await net.platform.on_result(rec(authorized, topic=PROVIDER_RESULTS.name))
    to_terminal = only(net.sent.on(TERMINAL_RESULTS.name), TransitLoadAuthorized)
    net.sent.take()
    link = net.purse_link  # type: ignore[attr-defined]
    tac = credit_load(link, to_terminal.date_time, bytes.fromhex(to_terminal.mac2))
    applied = TransitLoadApplied(
        **header(f"terminal:{T}", to_terminal.correlation_id, NOW), terminal_id=T,
        operator_id="transit", request_event_id=to_terminal.request_event_id,
        funding_pan_token=forwarded.funding_pan_token, card_token=to_terminal.card_token,
        amount=to_terminal.amount, new_balance=to_terminal.new_balance,
        load_counter=to_terminal.load_counter, tac=tac.hex().upper())
    await net.platform.on_load(rec(net.terminals[T].mac_event(applied),
                                   topic=TRANSIT_LOADS.name))
    proof = only([e for _t, _k, e in net.sent.take()], TransitLoadApplied)
    await operator.on_request(rec(proof, topic=operator.topic))
    confirmed = only([e for _t, _k, e in net.sent.take()], TransitLoadConfirmed)
    assert confirmed.confirmed and confirmed.balance == 6_000
    assert operator.t.purses[to_terminal.card_token]["balance"] == 6_000
    await net.platform.on_result(rec(confirmed, topic=PROVIDER_RESULTS.name))
    assert only(net.sent.on(TERMINAL_RESULTS.name), TransitLoadConfirmed).confirmed
    pending = net.platform_tables.pending[to_terminal.correlation_id]["state"]
    assert pending["load_stage"] == "confirmed" and not pending["reversed"]
