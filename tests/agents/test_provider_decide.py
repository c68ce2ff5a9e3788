"""The provider's pure decision functions: every response code, idempotency, ledger effects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import decide as platform
from agents.providers import decide
from agents.providers.issuer import HsmIssuer
from agents.providers.state import ChainHead, OpenBatch
from bench.sim import World
from cardbus.crypto.signing import Signer
from cardbus.response_codes import (
    APPROVED,
    BAD_CRYPTOGRAM,
    DO_NOT_HONOUR,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    INVALID_CARD,
    PIN_TRIES_EXCEEDED,
    REPLAYED_ATC,
)
from cards.profile import CardState
from schemas.payments import AuthorizationRequested, ReversalRequested
from tests.agents.conftest import NOW


class Ledger:
    """One provider's state for the tests, threaded through successive decisions."""

    def __init__(self, world: World, provider_id: str) -> None:
        self.world = world
        self.pid = provider_id
        self.adapter = world.adapters[provider_id]
        self.crypto = HsmIssuer(world.providers[provider_id], world.platform.verifier)
        self.cards: dict[str, object] = {}
        self.accounts: dict[str, object] = {}
        self.chain = ChainHead()
        self.batch = OpenBatch()
        self.processed: dict[str, object] = {}

    def open(self, issued):  # type: ignore[no-untyped-def]
        self.cards[issued.card.pan_token] = issued.card
        self.accounts[issued.card.pan_token] = issued.account
        return issued

    def auth_request(self, req, received_at=None) -> AuthorizationRequested:  # type: ignore[no-untyped-def]
        _, out = platform.request_payment(
            req, received_at=received_at or req.occurred_at, terminal=self.world.terminal_records["T-0001"],
            routes=self.world.routes, hsm=self.world.platform)
        ((role, _key, auth),) = out.events
        assert role == f"provider:{self.pid}"
        assert isinstance(auth, AuthorizationRequested)
        return auth

    def decide(self, auth: AuthorizationRequested, **kw: object) -> decide.Authorized:
        token = auth.card.pan_token
        result = self.adapter.authorize(
            auth, card=self.cards.get(token), account=self.accounts.get(token),  # type: ignore[arg-type]
            chain=self.chain, batch=self.batch,
            processed=self.processed.get(auth.event_id),  # type: ignore[arg-type]
            crypto=self.crypto, **kw)  # type: ignore[arg-type]
        if result.card is not None:
            self.cards[token] = result.card
        if result.account is not None:
            self.accounts[token] = result.account
        self.chain, self.batch = result.chain, result.batch
        self.processed[auth.event_id] = result.decision
        return result


@pytest.fixture
def ledger(world: World) -> Ledger:
    return Ledger(world, "bank-a")


def timeout_reversal(world: World, auth: AuthorizationRequested) -> ReversalRequested:
    """The reversal the platform sends when ``auth`` times out at the bank."""
    pending = platform.Pending(
        payment_id=auth.correlation_id, request_event_id=auth.request_event_id,
        auth_event_id=auth.event_id, terminal_id="T-0001", provider_id="bank-a",
        pan_token=auth.card.pan_token, masked_pan=auth.card.masked_pan, amount=auth.amount,
        deadline=NOW + timedelta(seconds=3))
    return platform.reversal(pending, "timeout", at=NOW, hsm=world.platform)


def pay(world: World, ledger: Ledger, card, amount: int = 1500, pin: str | None = "1234",  # type: ignore[no-untyped-def]
        state: CardState | None = None, when=NOW):  # type: ignore[no-untyped-def]
    req = world.pay("T-0001", card, amount=amount, when=when, pin=pin, state=state)
    return ledger.decide(ledger.auth_request(req))


def test_approval_places_a_hold_and_answers_arpc(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    result = pay(world, ledger, card, amount=2_500)
    d = result.decision
    assert (d.approved, d.response_code) == (True, APPROVED)
    assert d.auth_code is not None and len(d.arpc or "") == 16
    account = ledger.accounts[card.card.pan_token]
    assert account.balance == 10_000 and account.available == 7_500  # type: ignore[attr-defined]
    assert d.sequence == 0 and d.prev_hash == "0" * 64
    world.providers["bank-a"].verifier.verify_seal(d.seal, d.canonical_bytes())  # type: ignore[arg-type]


def test_duplicate_request_gets_the_same_decision_and_debits_once(world: World,
                                                                  ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay("T-0001", card, amount=3_000, when=NOW)
    auth = ledger.auth_request(req)
    first = ledger.decide(auth)
    again = ledger.decide(auth)
    assert again.duplicate
    assert again.decision.model_dump_json() == first.decision.model_dump_json()
    assert ledger.accounts[card.card.pan_token].available == 7_000  # type: ignore[attr-defined]


def test_insufficient_funds(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=1_000))
    assert pay(world, ledger, card, amount=1_001).decision.response_code == INSUFFICIENT_FUNDS
    assert ledger.accounts[card.card.pan_token].available == 1_000  # type: ignore[attr-defined]


def test_limit(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000_000))
    over = ledger.adapter.per_txn_limit + 1
    assert pay(world, ledger, card, amount=over).decision.response_code == EXCEEDS_LIMIT


def test_wrong_pin_counts_and_blocks_at_the_limit(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", pin="1234"))
    state = CardState(None, atc=0)
    codes = [pay(world, ledger, card, pin="9999", state=state).decision.response_code
             for _ in range(3)]
    assert codes == [INCORRECT_PIN, INCORRECT_PIN, PIN_TRIES_EXCEEDED]
    # blocked now, even with the right PIN
    assert pay(world, ledger, card, pin="1234", state=state).decision.response_code == \
        PIN_TRIES_EXCEEDED


def test_right_pin_resets_the_counter(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", pin="4321"))
    state = CardState(None, atc=0)
    assert pay(world, ledger, card, pin="0000", state=state).decision.response_code == \
        INCORRECT_PIN
    assert pay(world, ledger, card, pin="4321", state=state).decision.approved
    assert ledger.cards[card.card.pan_token].pin_tries == 0  # type: ignore[attr-defined]


def test_expired_card(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", expiry="260131"))
    # tapped while still valid (the terminal checks the certificate's expiry too), but the
    # authorization reaches the issuer after the card's last month
    req = world.pay("T-0001", card, amount=1500, when=NOW.replace(year=2026, month=1, day=31))
    auth = ledger.auth_request(req, received_at=NOW.replace(year=2026, month=2, day=1))
    assert ledger.decide(auth).decision.response_code == EXPIRED_CARD


def test_unknown_card(world: World, ledger: Ledger) -> None:
    card = world.issue("bank-a")  # issued, but the ledger never opened it
    assert pay(world, ledger, card).decision.response_code == INVALID_CARD


def test_replayed_atc(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    state = CardState(None, atc=0)
    assert pay(world, ledger, card, state=state).decision.approved
    state.set(atc=0)  # the card's counter rolled back: the next ARQC reuses ATC 1
    assert pay(world, ledger, card, state=state).decision.response_code == REPLAYED_ATC


def test_atc_out_of_window(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    state = CardState(None, atc=0)
    assert pay(world, ledger, card, state=state).decision.approved
    state.set(atc=1 + decide.ATC_WINDOW + 5)
    assert pay(world, ledger, card, state=state).decision.response_code == REPLAYED_ATC


def test_bad_cryptogram(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    req = world.pay("T-0001", card, amount=1500, when=NOW)
    auth = ledger.auth_request(req)
    flipped = ("0" if auth.card.arqc[0] != "0" else "1") + auth.card.arqc[1:]
    forged = auth.model_copy(update={"card": auth.card.model_copy(update={"arqc": flipped})})
    resealed = world.platform.sign_event(forged)
    assert ledger.decide(resealed).decision.response_code == BAD_CRYPTOGRAM


def test_forged_platform_signature_is_not_honoured(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=1500, when=NOW))
    impostor = Signer.generate(world.platform.verifier.key_id)
    forged = auth.model_copy(update={"seal": impostor.seal(auth.canonical_bytes())})
    result = ledger.decide(forged)
    assert result.decision.response_code == DO_NOT_HONOUR
    assert ledger.accounts[card.card.pan_token].available == 100_000  # type: ignore[attr-defined]


def test_decisions_chain_by_hash(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a"))
    state = CardState(None, atc=0)
    first = pay(world, ledger, card, state=state).decision
    second = pay(world, ledger, card, state=state).decision
    assert second.sequence == first.sequence + 1
    assert second.prev_hash == decide.decision_hash(first)


def test_reversal_releases_hold_once(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW))
    decision = ledger.decide(auth).decision
    rev = timeout_reversal(world, auth)
    token = card.card.pan_token
    first = ledger.adapter.reverse(rev, account=ledger.accounts[token],  # type: ignore[arg-type]
                                   batch=ledger.batch, decision=decision, crypto=ledger.crypto)
    assert first.answer.reversed and first.account is not None
    assert first.account.available == 10_000
    again = ledger.adapter.reverse(rev, account=first.account, batch=first.batch,
                                   decision=decision, crypto=ledger.crypto)
    assert again.account is not None and again.account.available == 10_000
    assert again.answer.model_dump_json() == first.answer.model_dump_json()


def test_settlement_totals_match_and_holds_clear_when_the_card_is_next_used(
        world: World, ledger: Ledger) -> None:
    cards = [ledger.open(world.issue("bank-a", balance=50_000)) for _ in range(3)]
    states = [CardState(None, atc=0) for _ in cards]
    amounts = [1_000, 2_000, 3_000]
    for card, state, amount in zip(cards, states, amounts, strict=True):
        assert pay(world, ledger, card, amount=amount, state=state).decision.approved
    pay(world, ledger, cards[0], amount=10**6, state=states[0])  # declined: limit
    before = ledger.batch.model_dump_json()
    cut = world.pay("T-0001", cards[1], amount=1, when=NOW)  # any event: time and id source
    settled = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut, batch=ledger.batch,
                                         crypto=ledger.crypto)
    assert settled.closed is not None
    (total,) = settled.closed.totals
    assert (total.approved_count, total.approved_amount, total.net_amount) == (3, 6_000, 6_000)
    assert settled.closed.declined_count == 1
    assert settled.batch.number == 2 and settled.batch.totals == {}
    assert len(settled.batch.model_dump_json()) < len(before)  # no per-payment lines
    ledger.batch = settled.batch
    for card, state, amount in zip(cards, states, amounts, strict=True):
        token = card.card.pan_token
        stored = ledger.accounts[token]
        assert stored.holds and stored.available == 50_000 - amount  # type: ignore[attr-defined]
        assert pay(world, ledger, card, amount=10, state=state).decision.approved  # clears it
        acct = ledger.accounts[token]
        assert acct.balance == 50_000 - amount  # type: ignore[attr-defined]
        assert [h.batch for h in acct.holds.values()] == [2]  # type: ignore[attr-defined]
    (again,) = ledger.batch.totals.values()
    assert (again.approved_count, again.approved_amount) == (3, 30)


def test_reversal_releases_the_hold_even_without_the_decision(world: World,
                                                               ledger: Ledger) -> None:
    """The card keeps its recent decisions only; a bank that was down may see the timeout's
    reversal after many newer payments of the card. The hold itself proves the approval."""
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW))
    assert ledger.decide(auth).decision.approved
    rev = timeout_reversal(world, auth)
    token = card.card.pan_token
    done = ledger.adapter.reverse(rev, account=ledger.accounts[token],  # type: ignore[arg-type]
                                  batch=ledger.batch, decision=None, crypto=ledger.crypto)
    assert done.answer.reversed and done.answer.response_code == APPROVED
    assert done.account is not None and (done.account.available, done.account.holds) == (
        10_000, {})
    (t,) = done.batch.totals.values()
    assert (t.approved_count, t.reversed_count, t.reversed_amount) == (1, 1, 4_000)


def test_reversal_after_the_cut_over_credits_back_once(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=4_000, when=NOW))
    decision = ledger.decide(auth).decision
    cut = world.pay("T-0001", card, amount=1, when=NOW)
    ledger.batch = ledger.adapter.close_batch(batch_id="B1", closed_at_event=cut,
                                              batch=ledger.batch, crypto=ledger.crypto).batch
    rev = timeout_reversal(world, auth)
    token = card.card.pan_token
    first = ledger.adapter.reverse(rev, account=ledger.accounts[token],  # type: ignore[arg-type]
                                   batch=ledger.batch, decision=decision, crypto=ledger.crypto)
    assert first.answer.reversed and first.account is not None
    assert (first.account.balance, first.account.holds) == (10_000, {})  # cleared, credited
    (t,) = first.batch.totals.values()
    assert (t.approved_count, t.reversed_count, t.reversed_amount) == (0, 1, 4_000)
    again = ledger.adapter.reverse(rev, account=first.account, batch=first.batch,
                                   decision=decision, crypto=ledger.crypto)
    assert again.account is not None and again.account.balance == 10_000  # not twice
    assert again.batch == first.batch


def test_decision_is_reproducible(world: World, ledger: Ledger) -> None:
    """Same inputs, same state -> the same bytes (what audit replay relies on)."""
    card = ledger.open(world.issue("bank-a"))
    auth = ledger.auth_request(world.pay("T-0001", card, amount=1500, when=NOW))
    token = auth.card.pan_token
    args = dict(card=ledger.cards[token], account=ledger.accounts[token], chain=ChainHead(),
                batch=OpenBatch(), processed=None, crypto=ledger.crypto)
    one = ledger.adapter.authorize(auth, **args)  # type: ignore[arg-type]
    two = ledger.adapter.authorize(auth, **args)  # type: ignore[arg-type]
    assert one.decision.model_dump_json() == two.decision.model_dump_json()
