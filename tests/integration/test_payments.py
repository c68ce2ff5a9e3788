"""Payments through the real platform and bank workers on the real broker."""

from __future__ import annotations

import pytest

from cardbus.response_codes import APPROVED, INCORRECT_PIN, INSUFFICIENT_FUNDS
from tests.integration.system import System, Till

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.parametrize("provider", ["bank-a", "bank-b"])
async def test_approved_payment_and_card_accepts_issuer(system: System, till: Till,
                                                        provider: str) -> None:
    card = await system.issue(provider, balance=50_000)
    done, tap, link = await till.pay(card, 1_234)
    assert done.response_code == APPROVED, system.logs()
    assert done.approved and done.provider_id == provider
    assert done.masked_pan == card.card.masked_pan
    assert Till.card_accepts(done, tap, link)  # the ARPC verifies on the card


async def test_wrong_pin_then_insufficient_funds(system: System, till: Till) -> None:
    card = await system.issue("bank-a", pin="2468", balance=1_000)
    done, tap, link = await till.pay(card, 500, pin="1111")
    assert done.response_code == INCORRECT_PIN
    assert Till.card_accepts(done, tap, link)  # a decline is authenticated too
    done, _, _ = await till.pay(card, 5_000, pin="2468")
    assert done.response_code == INSUFFICIENT_FUNDS
    done, _, _ = await till.pay(card, 1_000, pin="2468")
    assert done.response_code == APPROVED
