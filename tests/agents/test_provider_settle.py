"""Clearing holds into the balance (``settle``) at the batch boundary, with literal values: a
hold of the open batch stays a hold; a hold of any earlier batch is cleared exactly once."""

from __future__ import annotations

from agents.providers.decide import settle
from agents.providers.state import Account, Hold


def account(*holds: tuple[str, int, int]) -> Account:
    return Account(account_id="A1", currency="CNY", opening_balance=10_000, balance=10_000,
                   holds={k: Hold(amount=a, currency="CNY", batch=b) for k, a, b in holds})


def test_holds_of_the_open_batch_stay_and_earlier_ones_clear() -> None:
    acc = account(("r1", 100, 1), ("r2", 250, 2), ("r3", 40, 3))
    after = settle(acc, 3)
    assert after.balance == 10_000 - 350
    assert after.holds == {"r3": Hold(amount=40, currency="CNY", batch=3)}
    assert after.available == acc.available == 10_000 - 390
    again = settle(after, 3)
    assert again is after  # nothing left to clear: the same record, no write


def test_a_hold_exactly_at_the_open_batch_is_not_cleared() -> None:
    acc = account(("r1", 100, 2))
    assert settle(acc, 2) is acc
    cleared = settle(acc, 3)
    assert (cleared.balance, cleared.holds) == (9_900, {})


def test_no_holds_is_nothing_to_clear() -> None:
    acc = account()
    assert settle(acc, 5) is acc
