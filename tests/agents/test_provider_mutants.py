"""Provider decisions at the edges the mutation run (``make mutation``) found untested:
reversals of unknown and declined payments, the currency a credit-back is counted under, an
empty batch's close, the net amount of a batch with reversals, and the stable ids of answers."""

from __future__ import annotations

from bench.sim import World
from cardbus.response_codes import APPROVED, INSUFFICIENT_FUNDS, NO_ORIGINAL, PIN_TRIES_EXCEEDED
from cards.profile import CardState
from tests.agents.conftest import NOW as NOW_
from tests.agents.test_provider_decide import Ledger, ledger, pay, timeout_reversal

__all__ = ["ledger"]  # the fixture, imported for pytest


def test_reversal_of_an_unknown_card_answers_no_original(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW_))
    rev = timeout_reversal(world, auth)
    done = ledger.adapter.reverse(rev, account=None, batch=ledger.batch, decision=None,
                                  crypto=ledger.crypto)
    assert (done.answer.response_code, done.answer.reversed) == (NO_ORIGINAL, False)
    assert done.account is None and done.batch == ledger.batch


def test_reversal_of_a_request_never_decided_answers_no_original(world: World,
                                                                  ledger: Ledger) -> None:
    """The card is known but the bank never saw the authorization (it was lost on the way):
    no hold, no decision -> 25, nothing changes."""
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW_))
    rev = timeout_reversal(world, auth)
    account = ledger.accounts[card.card.pan_token]
    done = ledger.adapter.reverse(rev, account=account, batch=ledger.batch,  # type: ignore[arg-type]
                                  decision=None, crypto=ledger.crypto)
    assert (done.answer.response_code, done.answer.reversed) == (NO_ORIGINAL, False)
    assert done.account == account and done.batch == ledger.batch


def test_reversal_of_a_declined_payment_is_a_no_op(world: World, ledger: Ledger) -> None:
    """Nothing was authorized: the answer is 00 (nothing to undo), no money moves, the batch
    counts no reversal (a credit-back of a decline would create money)."""
    card = ledger.open(world.issue("bank-a", balance=1_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=1_001, when=NOW_))
    decision = ledger.decide(auth).decision
    assert decision.response_code == INSUFFICIENT_FUNDS
    rev = timeout_reversal(world, auth)
    account = ledger.accounts[card.card.pan_token]
    done = ledger.adapter.reverse(rev, account=account, batch=ledger.batch,  # type: ignore[arg-type]
                                  decision=decision, crypto=ledger.crypto)
    assert (done.answer.response_code, done.answer.reversed) == (APPROVED, True)
    assert done.account is not None
    assert (done.account.balance, done.account.available) == (1_000, 1_000)
    assert done.account.reversed == account.reversed  # type: ignore[attr-defined]
    assert done.batch == ledger.batch


def test_credit_back_is_counted_under_the_payment_currency(world: World,
                                                           ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW_))
    decision = ledger.decide(auth).decision
    cut = world.pay("T-0001", card, amount=1, when=NOW_)
    ledger.batch = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut,
                                              batch=ledger.batch, crypto=ledger.crypto).batch
    rev = timeout_reversal(world, auth)
    done = ledger.adapter.reverse(rev, account=ledger.accounts[card.card.pan_token],  # type: ignore[arg-type]
                                  batch=ledger.batch, decision=decision, crypto=ledger.crypto)
    assert list(done.batch.totals) == [decision.amount.currency]


def test_closing_an_empty_batch_emits_nothing_and_keeps_it_open(world: World,
                                                                ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    cut = world.pay("T-0001", card, amount=1, when=NOW_)
    settled = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut, batch=ledger.batch,
                                         crypto=ledger.crypto)
    assert settled.closed is None and settled.batch == ledger.batch
    assert settled.batch.number == 1


def test_batch_net_amount_is_approved_minus_reversed(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=50_000))
    state = CardState(None, atc=0)
    kept = pay(world, ledger, card, amount=3_000, state=state)
    assert kept.decision.approved
    auth = ledger.auth_request(world.pay("T-0001", card, amount=1_000, when=NOW_, state=state))
    assert ledger.decide(auth).decision.approved
    token = card.card.pan_token
    undone = ledger.adapter.reverse(timeout_reversal(world, auth),
                                    account=ledger.accounts[token],  # type: ignore[arg-type]
                                    batch=ledger.batch, decision=None, crypto=ledger.crypto)
    cut = world.pay("T-0001", card, amount=1, when=NOW_)
    settled = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut, batch=undone.batch,
                                         crypto=ledger.crypto)
    assert settled.closed is not None
    (t,) = settled.closed.totals
    assert (t.approved_amount, t.reversed_amount, t.net_amount) == (4_000, 1_000, 3_000)


def test_answer_ids_are_fixed_functions_of_the_source_event(world: World,
                                                            ledger: Ledger) -> None:
    """Answer ids are dedupe keys across restarts and rolling upgrades (the ISO 8583 bridge
    derives the same reversal id): pinned as known answers, SHA-256("<kind>:<source id>")
    truncated to 32 hex digits, computed once outside the code under test."""
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW_))
    ledger.decide(auth)
    rev = timeout_reversal(world, auth).model_copy(update={"event_id": "E-REV-1"})
    done = ledger.adapter.reverse(rev, account=ledger.accounts[card.card.pan_token],  # type: ignore[arg-type]
                                  batch=ledger.batch, decision=None, crypto=ledger.crypto)
    assert done.answer.event_id == "cd878682ef12df5185dc0b605174c176"
    cut = world.pay("T-0001", card, amount=1, when=NOW_).model_copy(
        update={"event_id": "E-CUT-1"})
    settled = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut, batch=done.batch,
                                         crypto=ledger.crypto)
    assert settled.closed is not None
    assert settled.closed.event_id == "dfb67e8e5bd9eeaff66151283d0ec9cb"


def test_the_blocking_try_returns_the_account_unchanged(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", pin="1234", balance=10_000))
    state = CardState(None, atc=0)
    for _ in range(2):
        pay(world, ledger, card, pin="9999", state=state)
    token = card.card.pan_token
    before = ledger.accounts[token]
    auth = ledger.auth_request(world.pay("T-0001", card, amount=1500, when=NOW_, pin="9999",
                                         state=state))
    result = ledger.adapter.authorize(
        auth, card=ledger.cards[token], account=before,  # type: ignore[arg-type]
        chain=ledger.chain, batch=ledger.batch, processed=None, crypto=ledger.crypto)
    assert result.decision.response_code == PIN_TRIES_EXCEEDED
    assert result.card is not None and result.card.status == "blocked"
    assert result.account == before



