"""The platform's handlers, one consumed topic at a time, without a broker: dict tables in,
events out (what the Faust app would send)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agents.platform.decide import Rejected, ReplayChanged
from agents.providers.announce import admission_for, key_provisioning, registration
from agents.providers.bank_a import adapter as bank_a
from agents.providers.bank_b import adapter as bank_b
from agents.providers.transit import adapter as transit_operator
from bench.sim import kbpk_ceremony
from cardbus.errors import DecodeError
from schemas.base import Money, header
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCancelled,
    PaymentCompleted,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.terminals import TerminalKeysIssued, TerminalStatusChanged
from schemas.transit import TransitLoadRequested
from streams.topics import (
    PROVIDER_RESULTS,
    TERMINAL_KEYS,
    TERMINAL_RESULTS,
    provider_requests_topic,
)
from tests.agents.conftest import NOW
from tests.agents.harness import Network, Rec, only, rec

T = "T-0001"


async def test_provider_registration_routes_and_keys_parked_until_registered() -> None:
    network = Network(NOW)
    provider = await network.join(bank_a)
    route = network.platform_tables.routes["bank-a"]
    assert route["keys_ready"] is True and route["payment_aids"] == [bank_a.aid]
    assert network.platform_tables.parked == {}
    # keys that arrive before their registration wait, then are taken with it
    late = Network(NOW)
    kbpk_ceremony(late.platform_hsm, provider.hsm)
    await late.platform.on_provider_keys(rec(key_provisioning(provider.hsm, NOW)))
    assert "bank-b" not in late.platform_tables.routes
    assert set(late.platform_tables.parked) == {"bank-a"}
    # a registration without the operator's admission waits for it, then is routed
    await late.platform.on_provider(rec(registration(bank_a, provider.hsm, NOW)))
    assert "bank-a" not in late.platform_tables.routes
    assert set(late.platform_tables.parked_registrations) == {"bank-a"}
    admitted = late.platform_hsm.sign_event(admission_for(bank_a, provider.hsm.verifier, NOW))
    await late.platform.on_admission(rec(admitted))
    assert late.platform_tables.parked == {} and late.platform_tables.parked_registrations == {}
    assert late.platform_tables.routes["bank-a"]["keys_ready"] is True


async def test_admission_is_the_operators_and_ranges_may_not_overlap() -> None:
    network = Network(NOW)
    provider = await network.join(bank_a)
    forged = admission_for(bank_b, provider.hsm.verifier, NOW)  # unsealed: nobody's act
    with pytest.raises(Rejected):
        await network.platform.on_admission(rec(forged))
    rival = network.platform_hsm.sign_event(admission_for(
        bank_a.__class__(**{**bank_a.__dict__, "provider_id": "bank-x"}),
        provider.hsm.verifier, NOW))  # bank-a's ranges for another provider
    with pytest.raises(Rejected, match="overlap"):
        await network.platform.on_admission(rec(rival))
    assert set(network.platform_tables.admissions) == {"bank-a"}


async def test_a_new_terminal_is_suspended_until_the_operator_activates_it() -> None:
    network = Network(NOW)
    await network.join(bank_a)
    keys = await network.enroll("T-NEW", activate=False)
    assert keys.status == "suspended"
    assert network.platform_tables.terminals["T-NEW"]["status"] == "suspended"
    card = await network.issue("bank-a")
    network.sent.take()
    await network.platform.on_request(rec(network.request("T-NEW", card, 100)))
    assert only(network.sent.on(TERMINAL_RESULTS.name), PaymentCompleted).response_code == "58"
    network.sent.take()
    await network.platform.on_status(rec(network.status("T-NEW", "active")))
    reissued = only(network.sent.on(TERMINAL_KEYS.name), TerminalKeysIssued)
    assert reissued.status == "active" and reissued.terminal_id == "T-NEW"


async def test_a_new_provider_reissues_every_terminal_key_set_with_its_aids(net: Network
                                                                         ) -> None:
    await net.join(bank_b)
    issued = [ev for ev in net.sent.on(TERMINAL_KEYS.name) if isinstance(ev, TerminalKeysIssued)]
    assert issued, "no key set reissued to the enrolled terminal"
    directory = {e.provider_id: e for e in issued[-1].card_auth_keys}
    assert directory["bank-b"].aids == (bank_b.aid,) and directory["bank-b"].kind == "bank"
    assert directory["bank-a"].aids == (bank_a.aid,)


async def test_enrollment_issues_keys_and_the_provider_directory() -> None:
    network = Network(NOW)
    await network.join(bank_a)
    await network.join(transit_operator)
    keys = await network.enroll(T)
    assert {k.usage for k in keys.keys} == {"mac", "pin_enc", "pan_enc"}
    directory = {e.provider_id: e for e in keys.card_auth_keys}
    assert directory["transit"].kind == "transit"
    assert directory["transit"].aids == transit_operator.transit_aids
    assert network.platform_tables.terminals[T]["status"] == "active"
    assert network.platform_tables.keys, "the terminal keys were not written to the key table"


async def test_status_change_needs_the_operator_seal(net: Network) -> None:
    change = TerminalStatusChanged(**header("platform", T, NOW), terminal_id=T,
                                   status="suspended", reason="stolen")
    with pytest.raises(Rejected):
        await net.platform.on_status(rec(change))
    await net.platform.on_status(rec(net.platform_hsm.sign_event(change)))
    assert net.platform_tables.terminals[T]["status"] == "suspended"
    card = await net.issue("bank-a")
    net.sent.take()
    await net.platform.on_request(rec(net.request(T, card, 500)))
    done = only(net.sent.on(TERMINAL_RESULTS.name), PaymentCompleted)
    assert done.response_code == "58" and not done.approved


async def test_payment_request_decision_and_resend(net: Network) -> None:
    card = await net.issue("bank-a")
    net.sent.take()
    req = net.request(T, card, 1_250)
    await net.platform.on_request(rec(req, partition=2))
    forwarded = net.sent.take()
    (topic, key, auth), = forwarded
    assert topic == provider_requests_topic("bank-a") and key == card.card.pan_token
    assert isinstance(auth, AuthorizationRequested) and auth.seal is not None
    assert net.platform_tables.pending[req.correlation_id]["partition"] == 2
    await net.deliver(forwarded)
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
    done = only(net.sent.on(TERMINAL_RESULTS.name), PaymentCompleted)
    assert done.approved and done.response_code == "00" and done.arpc
    slot = net.platform_tables.pending[req.correlation_id]
    assert slot["answer"]["event_id"] == done.event_id and slot["request_event_id"] == req.event_id
    net.sent.take()
    # the terminal resends the same request: the stored answer, nothing new to the bank
    await net.platform.on_request(rec(req, partition=2))
    (topic, _key, again), = net.sent.take()
    assert topic == TERMINAL_RESULTS.name and again == done


async def test_a_known_request_with_changed_content_is_refused_loudly(net: Network) -> None:
    """The same event id with another amount (re-MACed by a stolen terminal key, or a bug):
    never the stored answer, a ReplayChanged (the agent dead-letters it and warns)."""
    card = await net.issue("bank-a")
    req = net.request(T, card, 100)
    await net.platform.on_request(rec(req))
    net.sent.take()
    changed = net.terminals[T].mac_event(
        req.model_copy(update={"amount": Money(amount=499_900, currency="CNY"), "seal": None}))
    with pytest.raises(ReplayChanged, match="different content"):
        await net.platform.on_request(rec(changed))
    assert net.sent.take() == []
    other_id = net.terminals[T].mac_event(req.model_copy(update={"event_id": "f" * 32,
                                                                  "seal": None}))
    with pytest.raises(ReplayChanged, match="was requested by event"):
        await net.platform.on_request(rec(other_id))
    # the untouched request is still answered as before (nothing more while in flight)
    await net.platform.on_request(rec(req))
    assert net.sent.take() == []


async def test_tick_past_the_deadline_declines_91_and_reverses(net: Network) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 700)
    await net.platform.on_request(rec(req, partition=1))
    net.sent.take()
    early = net.tick(1, NOW + timedelta(seconds=1))
    await net.platform.on_request(rec(early, partition=1))
    assert net.sent.take() == []
    late = net.tick(1, NOW + timedelta(minutes=5))
    await net.platform.on_request(rec(late, partition=1))
    sent = [ev for _t, _k, ev in net.sent.take()]
    assert only(sent, PaymentCompleted).response_code == "91"
    assert only(sent, ReversalRequested).reason == "timeout"


async def test_reversal_answers_are_checked_for_the_provider_seal(net: Network) -> None:
    card = await net.issue("bank-a")
    provider = net.providers["bank-a"]
    answer = ReversalCompleted(**header("provider:bank-a", "p1", NOW), provider_id="bank-a",
                               original_event_id="a" * 32, pan_token=card.card.pan_token,
                               amount=Money(amount=1, currency="CNY"), reversed=True,
                               response_code="00")
    with pytest.raises(Rejected):
        await net.platform.on_result(rec(answer, topic=PROVIDER_RESULTS.name))
    await net.platform.on_result(rec(provider.hsm.sign_event(answer),
                                     topic=PROVIDER_RESULTS.name))
    assert net.sent.take() == []  # logged, nothing to forward


async def test_load_for_no_top_up_is_rejected(net: Network) -> None:
    await net.join(transit_operator)
    ev = TransitLoadRequested(
        **header(f"terminal:{T}", "nothing-pending", NOW), terminal_id=T, operator_id="transit",
        funding_payment_id="nothing-pending", funding_pan_token="tok_" + "A" * 20,
        aid=transit_operator.transit_aids[0], card_token="tok_" + "c" * 24,
        amount=Money(amount=100, currency="CNY"),
        balance_before=0, load_counter=0, card_random="00" * 4, mac1="00" * 4)
    with pytest.raises(Rejected):
        await net.platform.on_load(rec(net.terminals[T].mac_event(ev)))


async def test_garbage_is_a_decode_error_on_every_topic(net: Network) -> None:
    for handler in net.platform.handlers().values():
        with pytest.raises(DecodeError):
            await handler(Rec(b"\xff not json"))


async def test_a_tick_is_due_only_where_a_deadline_has_passed(net: Network) -> None:
    card = await net.issue("bank-a")
    assert not net.platform.due(4, NOW + timedelta(hours=1))  # nothing pending: no tick
    await net.platform.on_request(rec(net.request(T, card, 300), partition=4))
    assert not net.platform.due(4, NOW + timedelta(seconds=1))
    assert net.platform.due(4, NOW + timedelta(seconds=30))
    assert not net.platform.due(5, NOW + timedelta(seconds=30))
    net.platform.forget_deadlines()  # a rebalance: the index is rebuilt from the table
    assert net.platform.due(4, NOW + timedelta(seconds=30))


def _cancel(net: Network, req: Any) -> PaymentCancelled:
    return net.terminals[T].mac_event(PaymentCancelled(
        **header(f"terminal:{T}", req.correlation_id, NOW + timedelta(seconds=30)),
        terminal_id=T, request_event_id=req.event_id, pan_token=req.card.pan_token))


async def test_a_cancel_in_flight_reverses_at_the_bank_and_a_late_approval_again(
        net: Network) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 800)
    await net.platform.on_request(rec(req))
    forwarded = net.sent.take()
    await net.platform.on_request(rec(_cancel(net, req)))
    sent = net.sent.take()
    reversal = only([ev for _t, _k, ev in sent], ReversalRequested)
    assert reversal.reason == "terminal_cancelled" and not net.sent.on(TERMINAL_RESULTS.name)
    await net.platform.on_request(rec(_cancel(net, req)))  # the same cancel again: nothing
    assert net.sent.take() == []
    await net.deliver(forwarded)
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
    late = [ev for _t, _k, ev in net.sent.take()]
    assert only(late, ReversalRequested).reason == "late_approval"
    assert not any(isinstance(ev, PaymentCompleted) for ev in late)


async def test_a_cancel_after_an_unheard_approval_reverses_it(net: Network) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 650)
    await net.platform.on_request(rec(req))
    await net.deliver(net.sent.take())
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name))
    net.sent.take()  # the approval the terminal never heard
    await net.platform.on_request(rec(_cancel(net, req)))
    assert only([ev for _t, _k, ev in net.sent.take()], ReversalRequested).reason == \
        "terminal_cancelled"


async def test_a_cancel_before_its_request_keeps_the_request_from_the_bank(net: Network
                                                                         ) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 300)
    await net.platform.on_request(rec(_cancel(net, req)))
    await net.platform.on_request(rec(req))
    assert net.sent.take() == []


async def test_an_unclaimed_approval_is_parked_then_reversed_once(net: Network) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 1_100)
    await net.platform.on_request(rec(req, partition=3))
    forwarded = net.sent.take()
    del net.platform_tables.pending[req.correlation_id]  # the platform lost its record
    net.platform.forget_deadlines()
    await net.deliver(forwarded)
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name, partition=3))
    assert net.sent.take() == []  # parked, not dead-lettered, not forwarded
    soon = net.tick(3, NOW + timedelta(seconds=5))
    await net.platform.on_request(rec(soon, partition=3))
    assert net.sent.take() == []
    late = net.tick(3, NOW + timedelta(minutes=2))
    await net.platform.on_request(rec(late, partition=3))
    reversal = only([ev for _t, _k, ev in net.sent.take()], ReversalRequested)
    assert reversal.reason == "unmatched_approval"
    assert reversal.original_event_id == decision.request_event_id
    await net.platform.on_request(rec(late, partition=3))  # exactly once
    assert net.sent.take() == []


async def test_a_resent_request_claims_its_parked_decision(net: Network) -> None:
    card = await net.issue("bank-a")
    req = net.request(T, card, 450)
    await net.platform.on_request(rec(req, partition=1))
    forwarded = net.sent.take()
    del net.platform_tables.pending[req.correlation_id]
    net.platform.forget_deadlines()
    await net.deliver(forwarded)
    decision = only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)
    await net.platform.on_result(rec(decision, topic=PROVIDER_RESULTS.name, partition=1))
    await net.platform.on_request(rec(req, partition=1))  # the terminal's resend
    again = net.sent.take()
    await net.deliver(again)  # the bank answers its duplicate with the same decision
    (_t, _k, same), = net.sent.take()
    assert same == decision
    await net.platform.on_result(rec(same, topic=PROVIDER_RESULTS.name, partition=1))
    done = only(net.sent.on(TERMINAL_RESULTS.name), PaymentCompleted)
    assert done.approved
    net.sent.take()
    later = net.tick(1, NOW + timedelta(minutes=2))
    await net.platform.on_request(rec(later, partition=1))
    assert not any(isinstance(ev, ReversalRequested) for _t, _k, ev in net.sent.take())
