"""What a bank's decline returns besides its code, for every decline, with literal values: the
card and account records as they must be stored (the handler stores the card's record with the
decision only when both come back, so a decline that returned nothing would forget the decision
and decide a repeat afresh), and whether the answer carries an ARPC (none when the card did not
prove the transaction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agents.providers import decide
from bench.sim import World
from cardbus.crypto.signing import Signer
from cardbus.response_codes import (
    BAD_CRYPTOGRAM,
    CARD_AUTH_FAILED,
    DO_NOT_HONOUR,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    INVALID_CARD,
    LOST_CARD,
    PIN_REQUIRED,
    PIN_TRIES_EXCEEDED,
    REPLAYED_ATC,
    STOLEN_CARD,
    WRONG_CURRENCY,
)
from cards.profile import CardState
from schemas.payments import AuthorizationRequested
from tests.agents.conftest import NOW
from tests.agents.test_provider_decide import Ledger, ledger

__all__ = ["ledger"]  # the fixture, imported for pytest

NO_ARPC = {DO_NOT_HONOUR, INVALID_CARD, BAD_CRYPTOGRAM, REPLAYED_ATC}


def _resealed(world: World, auth: AuthorizationRequested, **card: Any) -> AuthorizationRequested:
    forged = auth.model_copy(update={"card": auth.card.model_copy(update=card)})
    return world.platform.sign_event(forged)  # type: ignore[no-any-return]


Case = Callable[[World, Ledger], tuple[AuthorizationRequested, Any, Any, int | None]]
"""Builds (request, card record given, account given, the card's last ATC afterwards: None
when the decline comes before the ATC is taken)."""


def _auth(world: World, ledger: Ledger, *, amount: int = 1_500, pin: str | None = "1234",
          balance: int = 100_000, **issue: Any) -> tuple[AuthorizationRequested, Any, Any]:
    issued = ledger.open(world.issue("bank-a", balance=balance, **issue))
    req = world.pay("T-0001", issued, amount=amount, when=NOW, pin=pin,
                    state=CardState(None, atc=4))
    return ledger.auth_request(req), issued.card, issued.account


def forged_seal(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    impostor = Signer.generate(world.platform.verifier.key_id)
    return auth.model_copy(update={"seal": impostor.seal(auth.canonical_bytes())}), card, \
        account, None


def other_card(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, _, _ = _auth(world, ledger)
    other = world.issue("bank-a")
    return auth, other.card, other.account, None


def flipped_arqc(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    arqc = ("0" if auth.card.arqc[0] != "0" else "1") + auth.card.arqc[1:]
    return _resealed(world, auth, arqc=arqc), card, account, None


def other_transaction(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    bigger = auth.model_copy(update={"amount": auth.amount.model_copy(update={"amount": 9_999})})
    return world.platform.sign_event(bigger), card, account, None


def blocked(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    return auth, card.model_copy(update={"status": "blocked"}), account, None


def expired_card(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    return auth, card.model_copy(update={"expiry": "2510"}), account, None


def other_currency(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    return auth, card, account.model_copy(update={"currency": "USD"}), None


def replayed(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    return auth, card.model_copy(update={"last_atc": auth.card.atc}), account, auth.card.atc


def reported(how: str) -> Case:
    def case(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
        auth, card, account = _auth(world, ledger)
        return auth, card.model_copy(update={"reported": how}), account, auth.card.atc
    return case  # type: ignore[return-value]


def card_auth_failed(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger)
    return _resealed(world, auth, card_auth="failed"), card, account, auth.card.atc


def no_pin_above_floor(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger, amount=ledger.adapter.cvm_floor + 1, pin=None)
    return auth, card, account, auth.card.atc


def wrong_pin(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger, pin="9999")
    return auth, card, account, auth.card.atc


def over_limit(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger, amount=ledger.adapter.per_txn_limit + 1,
                                balance=10_000_000)
    return auth, card, account, auth.card.atc


def short_of_funds(world: World, ledger: Ledger):  # type: ignore[no-untyped-def]
    auth, card, account = _auth(world, ledger, amount=1_001, balance=1_000)
    return auth, card, account, auth.card.atc


@pytest.mark.parametrize(("case", "code"), [
    (forged_seal, DO_NOT_HONOUR), (other_card, INVALID_CARD), (flipped_arqc, BAD_CRYPTOGRAM),
    (other_transaction, BAD_CRYPTOGRAM), (blocked, PIN_TRIES_EXCEEDED),
    (expired_card, EXPIRED_CARD), (other_currency, WRONG_CURRENCY), (replayed, REPLAYED_ATC),
    (reported("lost"), LOST_CARD), (reported("stolen"), STOLEN_CARD),
    (card_auth_failed, CARD_AUTH_FAILED), (no_pin_above_floor, PIN_REQUIRED),
    (wrong_pin, INCORRECT_PIN), (over_limit, EXCEEDS_LIMIT),
    (short_of_funds, INSUFFICIENT_FUNDS),
], ids=lambda v: getattr(v, "__name__", v))
def test_a_decline_returns_the_records_to_store(world: World, ledger: Ledger, case: Case,
                                                code: str) -> None:
    auth, card, account, last_atc = case(world, ledger)
    result = ledger.adapter.authorize(auth, card=card, account=account, chain=ledger.chain,
                                      batch=ledger.batch, processed=None, crypto=ledger.crypto)
    d = result.decision
    assert (d.response_code, d.approved, d.auth_code) == (code, False, None)
    assert result.account == account  # no hold, nothing else changed
    expected = card if last_atc is None else card.model_copy(update={"last_atc": last_atc})
    if code == INCORRECT_PIN:
        expected = expected.model_copy(update={"pin_tries": 1})
    elif code in (EXCEEDS_LIMIT, INSUFFICIENT_FUNDS):
        expected = expected.model_copy(update={"pin_tries": 0})  # the PIN was right
    assert result.card == expected
    assert (d.arpc is None) == (code in NO_ARPC)
    if d.arpc is not None:
        assert len(d.arpc) == 16
    assert not result.duplicate and result.decision.sequence == 0


def test_a_repeat_returns_the_stored_state_as_a_duplicate(world: World, ledger: Ledger) -> None:
    auth, card, account = _auth(world, ledger)
    first = ledger.adapter.authorize(auth, card=card, account=account, chain=ledger.chain,
                                     batch=ledger.batch, processed=None, crypto=ledger.crypto)
    again = ledger.adapter.authorize(auth, card=first.card, account=first.account,
                                     chain=first.chain, batch=first.batch,
                                     processed=first.decision, crypto=ledger.crypto)
    assert again.duplicate is True and again.decision == first.decision
    assert (again.card, again.account) == (first.card, first.account)
    assert (again.chain, again.batch) == (first.chain, first.batch)
    assert first.duplicate is False and first.decision.approved
    assert first.batch.opened_at == auth.occurred_at.isoformat()
    assert decide.derived_id("decision", auth.event_id) == first.decision.event_id
