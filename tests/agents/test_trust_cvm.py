"""Issue 22, finding 8: cardholder verification reaches the bank (CVM results 9F34, the card
authentication outcome) and the adapters' rules decide: an online PIN above each adapter's
floor (1A otherwise), a decline when card authentication failed (Q1)."""

from __future__ import annotations

import pytest

from bench.sim import World
from cardbus.response_codes import APPROVED, CARD_AUTH_FAILED, PIN_REQUIRED
from reader_agent import requests as terminal
from schemas.cards import NO_CVM_PERFORMED
from schemas.payments import PaymentRequested
from tests.agents.conftest import NOW
from tests.agents.test_provider_decide import Ledger

T = "T-0001"


def code(world: World, provider: str, amount: int, pin: str | None = None,
         **card_changes: str) -> str:
    ledger = Ledger(world, provider)
    card = ledger.open(world.issue(provider, balance=10_000_000))
    req = world.pay(T, card, amount=amount, when=NOW, pin=pin)
    if card_changes:  # what a terminal could put in the request (its MAC is good)
        req = world.terminals[T].mac_event(req.model_copy(update={
            "card": req.card.model_copy(update=card_changes)}))
    return ledger.decide(ledger.auth_request(req)).decision.response_code


def test_4000_without_a_pin_is_not_approved(world: World) -> None:
    """The finding: 4,000.00 without a PIN was approved."""
    assert code(world, "bank-a", 400_000) == PIN_REQUIRED
    assert code(world, "bank-a", 400_000, pin="1234") == APPROVED


@pytest.mark.parametrize(("provider", "amount", "expected"), [
    ("bank-a", 100_000, APPROVED), ("bank-a", 100_001, PIN_REQUIRED),
    ("bank-b", 50_000, APPROVED), ("bank-b", 50_001, PIN_REQUIRED),
])
def test_each_adapter_s_pin_floor_is_inclusive(world: World, provider: str, amount: int,
                                               expected: str) -> None:
    assert world.adapters[provider].cvm_floor == {"bank-a": 100_000, "bank-b": 50_000}[provider]
    assert code(world, provider, amount) == expected


def test_a_pin_block_without_online_pin_cvm_results_is_not_verification(world: World) -> None:
    assert code(world, "bank-a", 100_001, pin="1234", cvm_results="1F0302") == PIN_REQUIRED
    assert code(world, "bank-a", 100_001, pin="1234", cvm_results="020300") == APPROVED


def test_failed_card_authentication_is_declined(world: World) -> None:
    assert code(world, "bank-a", 100, card_auth="failed") == CARD_AUTH_FAILED
    assert code(world, "bank-a", 100, card_auth="not_performed") == APPROVED


def test_the_terminal_reports_the_cvm_it_performed(world: World) -> None:
    card = world.issue("bank-a")
    with_pin: PaymentRequested = world.pay(T, card, amount=100, when=NOW, pin="1234")
    without: PaymentRequested = world.pay(T, card, amount=100, when=NOW, pin=None)
    assert (with_pin.card.cvm_results, without.card.cvm_results) == ("420300", NO_CVM_PERFORMED)
    assert with_pin.card.card_auth == "passed"


def test_a_sale_never_shows_its_pin() -> None:
    from schemas.base import Money
    from schemas.values import Merchant

    sale = terminal.Sale(Money(amount=1, currency="CNY"), Merchant(merchant_id="M", name="S", mcc="5999"),
                "4321")
    assert "4321" not in repr(sale) and "pin" not in repr(sale)
