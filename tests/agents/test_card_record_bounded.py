"""A card's record at the bank stays small whatever the card's history (issue 16 item 2: no
per-payment record grows with the card's history): the newest decisions whole (a redelivered
request gets the same bytes), older ones as notes (a reversal finds what it undoes), and a
request redelivered after its whole decision was dropped is never decided twice."""

from __future__ import annotations

import json

from agents.providers.base import card_issued_event
from agents.providers.settle import cutover_events
from agents.providers.state import (
    RECENT_DECISIONS,
    SEALED_DECISIONS,
    Account,
    CardLedger,
)
from cards.profile import CardState
from schemas.base import header
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    ReversalCompleted,
    ReversalRequested,
)
from tests.agents.conftest import NOW
from tests.agents.harness import Network, only, rec

T = "T-0001"
OPENING = 1_000_000


async def _pay(net: Network, card, atc: int, amount: int) -> tuple[  # type: ignore[no-untyped-def]
        AuthorizationRequested, AuthorizationDecided]:
    """One payment of ``card`` through the platform to the bank; the bank's request and its
    decision."""
    await net.platform.on_request(rec(net.request(T, card, amount,
                                                  state=CardState(None, atc=atc))))
    auth = only([ev for _t, _k, ev in net.sent.take()], AuthorizationRequested)
    provider = net.providers["bank-a"]
    await provider.on_request(rec(auth, topic=provider.topic))
    return auth, only([ev for _t, _k, ev in net.sent.take()], AuthorizationDecided)


def _reversal(net: Network, auth: AuthorizationRequested) -> ReversalRequested:
    return net.platform_hsm.sign_event(ReversalRequested(
        **header("platform", auth.correlation_id, NOW), provider_id="bank-a",
        original_event_id=auth.event_id, pan_token=auth.card.pan_token, amount=auth.amount,
        reason="timeout"))


async def test_a_busy_cards_record_is_bounded_and_keeps_the_newest_whole(net: Network) -> None:
    card = await net.issue("bank-a", balance=OPENING)
    paid = [await _pay(net, card, atc, 100 + atc) for atc in range(1, RECENT_DECISIONS + 8)]
    assert all(d.approved for _a, d in paid)
    raw = net.providers["bank-a"].t.ledger[card.card.pan_token]
    entry = CardLedger.model_validate(raw)
    assert list(entry.decided) == [a.event_id for a, _d in paid[-SEALED_DECISIONS:]]
    assert list(entry.notes) == [a.event_id for a, _d in paid[-RECENT_DECISIONS:]]
    assert entry.decided[paid[-1][0].event_id] == paid[-1][1].model_dump(mode="json")
    note = entry.note(paid[-RECENT_DECISIONS][0].event_id)
    assert note is not None and note.approved and note.amount == paid[-RECENT_DECISIONS][0].amount
    assert entry.note(paid[0][0].event_id) is None  # older than RECENT_DECISIONS: forgotten
    # the decisions rewritten with every payment: ~10 KB whatever the history, not ~0.8 KB per
    # decision kept (the holds are the open batch's, cleared at the cut-over)
    assert len(json.dumps([raw["decided"], raw["notes"]])) < 12_000


async def test_a_redelivered_recent_request_gets_the_same_decision(net: Network) -> None:
    card = await net.issue("bank-a", balance=OPENING)
    auth, decision = await _pay(net, card, 1, 500)
    for atc in range(2, 2 + SEALED_DECISIONS - 1):
        await _pay(net, card, atc, 100)
    provider = net.providers["bank-a"]
    before = dict(provider.t.ledger), dict(provider.t.partition)
    await provider.on_request(rec(auth, topic=provider.topic))
    (_t, _k, again), = net.sent.take()
    assert again == decision
    assert (dict(provider.t.ledger), dict(provider.t.partition)) == before


async def test_a_request_redelivered_after_its_decision_was_dropped_is_not_decided_again(
        net: Network) -> None:
    card = await net.issue("bank-a", balance=OPENING)
    auth, _decision = await _pay(net, card, 1, 7_000)
    for atc in range(2, 2 + SEALED_DECISIONS):
        await _pay(net, card, atc, 100)
    provider = net.providers["bank-a"]
    before = dict(provider.t.ledger), dict(provider.t.partition)
    await provider.on_request(rec(auth, topic=provider.topic))
    assert net.sent.take() == []  # unanswered: the platform's timeout declines and reverses it
    assert (dict(provider.t.ledger), dict(provider.t.partition)) == before  # no second hold


async def test_a_reversal_after_the_cut_over_credits_back_from_the_note(net: Network) -> None:
    card = await net.issue("bank-a", balance=OPENING)
    auth, decision = await _pay(net, card, 1, 4_000)
    assert decision.approved
    provider = net.providers["bank-a"]
    for part, ev in cutover_events(provider.hsm, "B1", NOW, 1):
        await provider.on_request(rec(ev, topic=provider.topic, partition=part))
    for atc in range(2, 2 + SEALED_DECISIONS + 2):  # its whole decision is gone
        await _pay(net, card, atc, 100)
    net.sent.take()
    token = card.card.pan_token
    entry = CardLedger.model_validate(provider.t.ledger[token])
    assert entry.decision(auth.event_id) is None and entry.note(auth.event_id) is not None
    before = Account.model_validate(provider.t.ledger[token]["account"]).available
    await provider.on_request(rec(_reversal(net, auth), topic=provider.topic))
    answer = only([ev for _t, _k, ev in net.sent.take()], ReversalCompleted)
    assert answer.reversed and answer.response_code == "00"
    after = Account.model_validate(provider.t.ledger[token]["account"]).available
    assert after == before + 4_000  # the cleared approval credited back, once
    await provider.on_request(rec(_reversal(net, auth), topic=provider.topic))
    net.sent.take()
    assert Account.model_validate(provider.t.ledger[token]["account"]).available == after


def test_a_record_written_before_notes_were_kept_still_reverses_and_trims() -> None:
    """A card record of the previous version (every decision whole, no notes) is read as is:
    its decisions count as notes, and the next decision trims it to the bound."""
    old = {f"r{i:02d}": {"approved": True, "amount": {"amount": 100 + i, "currency": "CNY"}}
           for i in range(RECENT_DECISIONS)}
    card = {"pan_token": "tok_" + "a" * 40, "masked_pan": "623456******1234", "account_id": "A1",
            "expiry": "3012", "pin": {"sealed_value": {
                "key_id": "k", "alg": "AES-256-GCM", "nonce": "AAAAAAAAAAAAAAAA",
                "ct": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}}
    entry = CardLedger.model_validate({"card": card, "account": {
        "account_id": "A1", "currency": "CNY", "opening_balance": 1, "balance": 1},
        "decided": old})
    note = entry.note("r05")
    assert note is not None and note.approved and note.amount.amount == 105
    newer = entry.with_decision("new", {"approved": False,
                                        "amount": {"amount": 1, "currency": "CNY"}})
    assert list(newer.decided) == [*list(old)[-(SEALED_DECISIONS - 1):], "new"]
    assert list(newer.notes) == [*list(old)[1:], "new"]
    assert newer.note("r00") is None
    new_note = newer.note("new")
    assert new_note is not None and not new_note.approved


async def test_the_audits_replay_of_the_bank_answers_exactly_as_the_bank(net: Network) -> None:
    """Every request the bank sees, fed to the audit's replay of the bank: the same outputs,
    byte for byte, including no answer to a request redelivered after its whole decision was
    dropped, a reversal decided from a note, and a recent redelivery answered again."""
    from audit.rederive import ProviderReplayer

    provider = net.providers["bank-a"]
    replay = ProviderReplayer(provider.adapter, provider.hsm, net.platform_hsm.verifier, 0)
    card = await net.issue("bank-a", balance=OPENING)
    at_ms = int(NOW.timestamp() * 1000)
    assert replay.apply(card_issued_event(card, provider.hsm, NOW), at_ms) == []

    async def bank_request(atc: int, amount: int) -> AuthorizationRequested:
        await net.platform.on_request(rec(net.request(T, card, amount,
                                                      state=CardState(None, atc=atc))))
        return only([ev for _t, _k, ev in net.sent.take()], AuthorizationRequested)

    first = await bank_request(1, 4_000)
    (cut,) = [ev for _p, ev in cutover_events(provider.hsm, "B1", NOW, 1)]
    later = [await bank_request(atc, 100) for atc in range(2, 3 + SEALED_DECISIONS)]
    inputs = [first, cut, *later, first, _reversal(net, first), later[-1]]
    answers = []
    for ev in inputs:
        await provider.on_request(rec(ev, topic=provider.topic))
        by_bank = [out.model_dump_json() for _t, _k, out in net.sent.take()]
        replayed = [out.model_dump_json() for _t, out in replay.apply(ev, at_ms)]
        assert replayed == by_bank, ev.type
        answers.append(len(by_bank))
    # a decision each, the batch closed, no answer to the dropped redelivery, then the
    # reversal's answer and the recent redelivery's same decision
    assert answers == [1, 1, *[1] * len(later), 0, 1, 1]
