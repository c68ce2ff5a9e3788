"""Issue 22, the bank's side: what the ARQC covers is the request's own transaction (CDOL1),
malformed card data and bad cryptograms decide (decline) instead of raising, expiry against the
provider's own clock, and the boundaries of the rules (ATC window, limit, funds) with literals."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from agents.providers import decide
from bench.sim import World
from cardbus.crypto import emv
from cardbus.emv.data import ARQC_DATA_LEN, currency_numeric, parse_arqc_data
from cardbus.errors import ConfigError
from cardbus.response_codes import (
    APPROVED,
    BAD_CRYPTOGRAM,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    FORMAT_ERROR,
    INSUFFICIENT_FUNDS,
    PIN_TRIES_EXCEEDED,
    REPLAYED_ATC,
)
from schemas.base import Money
from schemas.payments import PaymentRequested
from tests.agents.conftest import NOW
from tests.agents.test_provider_decide import Ledger

T = "T-0001"


@pytest.fixture
def ledger(world: World) -> Ledger:
    return Ledger(world, "bank-a")


def forge(world: World, card, req: PaymentRequested, *, amount: int | None = None,  # type: ignore[no-untyped-def]
          currency: str = "CNY", card_amount: int | None = None, card_currency: int = 156,
          amount_other: int = 0, date: str | None = None, tx_type: int = 0,
          un: bytes = b"\x11\x22\x33\x44", request_un: bytes | None = None,
          cdol_hex: str | None = None) -> PaymentRequested:
    """``req`` as a terminal could re-MAC it: its amount/currency set to ``amount``/``currency``
    and the card data to a cryptogram the card really makes over the given CDOL1 fields (the
    card's own ICC key: the ARQC verifies; only what it covers differs)."""
    amount = req.amount.amount if amount is None else amount
    atc = req.card.atc
    data = emv.arqc_data(amount=amount if card_amount is None else card_amount,
                         currency_code=card_currency, country_code=156,
                         date=date or req.occurred_at.strftime("%y%m%d"),
                         unpredictable_number=un, atc=atc, amount_other=amount_other,
                         tx_type=tx_type)
    icc = bytes.fromhex(card.profile.icc_master_key)
    arqc = emv.generate_arqc(emv.derive_session_key(icc, atc), data)
    forged_card = req.card.model_copy(update={
        "cdol_data": cdol_hex if cdol_hex is not None else data.hex().upper(),
        "arqc": arqc.hex().upper(),
        "unpredictable_number": (request_un or un).hex().upper()})
    return world.terminals[T].mac_event(req.model_copy(update={
        "amount": Money(amount=amount, currency=currency), "card": forged_card}))


def decide_code(ledger: Ledger, req: PaymentRequested, **kw) -> str:  # type: ignore[no-untyped-def]
    return ledger.decide(ledger.auth_request(req), **kw).decision.response_code


# -- finding 1: the cryptogram covers this request, field by field --------------------------

def test_card_cryptogram_over_1_00_does_not_approve_4999_00(world: World, ledger: Ledger) -> None:
    """The finding as reproduced: the card's ARQC over 1.00, the terminal re-MACs a request for
    4,999.00 with the same card data: approved (00) with 499,900 held before the fix."""
    card = ledger.open(world.issue("bank-a", balance=1_000_000))
    real = world.pay(T, card, amount=100, when=NOW)
    bigger = world.terminals[T].mac_event(real.model_copy(update={
        "amount": Money(amount=499_900, currency="CNY")}))
    assert decide_code(ledger, bigger) == BAD_CRYPTOGRAM
    assert ledger.accounts[card.card.pan_token].available == 1_000_000  # type: ignore[attr-defined]


def test_the_request_the_card_signed_is_approved(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay(T, card, amount=100, when=NOW)
    assert decide_code(ledger, forge(world, card, req)) == APPROVED  # the helper is faithful


@pytest.mark.parametrize(("field", "kw"), [
    ("9F02 amount", {"card_amount": 101}),
    ("9F03 amount other", {"amount_other": 1}),
    ("5F2A currency", {"card_currency": 840}),
    ("9F37 unpredictable number", {"request_un": b"\x11\x22\x33\x45"}),
    ("9C transaction type", {"tx_type": 0x01}),
    ("9A date two days off", {"date": (NOW - timedelta(days=2)).strftime("%y%m%d")}),
    ("currency unknown to CardBus", {"currency": "XTS", "card_currency": 963}),
])
def test_cryptogram_over_another_transaction_is_declined_82(
        world: World, ledger: Ledger, field: str, kw: dict[str, object]) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay(T, card, amount=100, when=NOW)
    assert decide_code(ledger, forge(world, card, req, **kw)) == BAD_CRYPTOGRAM, field  # type: ignore[arg-type]
    assert ledger.accounts[card.card.pan_token].holds == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("days", [-1, 1])
def test_a_date_one_day_off_is_the_terminal_s_time_zone(world: World, ledger: Ledger,
                                                        days: int) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay(T, card, amount=100, when=NOW)
    when = (NOW + timedelta(days=days)).strftime("%y%m%d")
    assert decide_code(ledger, forge(world, card, req, date=when)) == APPROVED


@pytest.mark.parametrize("cdol_hex", ["ABC", "00" * (ARQC_DATA_LEN - 1), "00" * (ARQC_DATA_LEN + 1)])
def test_malformed_cryptogram_data_is_a_format_error_not_a_crash(
        world: World, ledger: Ledger, cdol_hex: str) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay(T, card, amount=100, when=NOW)
    result = ledger.decide(ledger.auth_request(forge(world, card, req, cdol_hex=cdol_hex)))
    assert (result.decision.response_code, result.decision.arpc) == (FORMAT_ERROR, None)


def test_cryptogram_data_with_no_real_date_is_a_format_error(world: World,
                                                             ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    req = world.pay(T, card, amount=100, when=NOW)
    good = forge(world, card, req).card.cdol_data
    no_date = good[:2 * 21] + "261340" + good[2 * 24:]  # 9A at bytes 21..23: month 13
    assert decide_code(ledger, forge(world, card, req, cdol_hex=no_date)) == FORMAT_ERROR


def test_bad_arqc_on_a_blocked_card_is_a_decline_not_an_error(world: World,
                                                              ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    token = card.card.pan_token
    ledger.cards[token] = ledger.cards[token].model_copy(update={"status": "blocked"})  # type: ignore[attr-defined]
    req = world.pay(T, card, amount=100, when=NOW)
    auth = ledger.auth_request(req)
    bad = auth.card.arqc[:-1] + ("0" if auth.card.arqc[-1] != "0" else "1")
    resealed = world.platform.sign_event(auth.model_copy(update={
        "card": auth.card.model_copy(update={"arqc": bad})}))
    result = ledger.decide(resealed)
    assert (result.decision.response_code, result.decision.arpc) == (BAD_CRYPTOGRAM, None)
    # a good ARQC on the blocked card: declined 75, with an ARPC (the card learns it)
    good = ledger.decide(ledger.auth_request(world.pay(T, card, amount=100, when=NOW)))
    assert good.decision.response_code == PIN_TRIES_EXCEEDED and good.decision.arpc


def test_the_last_byte_of_the_arqc_counts(world: World, ledger: Ledger) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000))
    auth = ledger.auth_request(world.pay(T, card, amount=100, when=NOW))
    last = auth.card.arqc[:-2] + f"{int(auth.card.arqc[-2:], 16) ^ 0x01:02X}"
    resealed = world.platform.sign_event(auth.model_copy(update={
        "card": auth.card.model_copy(update={"arqc": last})}))
    assert ledger.decide(resealed).decision.response_code == BAD_CRYPTOGRAM


def test_parse_arqc_data_reads_each_cdol1_field() -> None:
    data = emv.arqc_data(amount=123_456, currency_code=978, country_code=250, date="261125",
                         unpredictable_number=bytes.fromhex("A1B2C3D4"), atc=0x0102,
                         amount_other=7, tx_type=0x09, tvr=bytes.fromhex("0102030405"))
    got = parse_arqc_data(data)
    assert (got.amount, got.amount_other, got.country, got.currency, got.date, got.tx_type) == (
        123_456, 7, 250, 978, "261125", 0x09)
    assert (got.tvr.hex(), got.unpredictable_number.hex(), got.aip.hex(), got.atc) == (
        "0102030405", "a1b2c3d4", "5800", 0x0102)


def test_an_unknown_currency_has_no_numeric_code() -> None:
    assert currency_numeric("CNY") == 156 and currency_numeric("EUR") == 978
    with pytest.raises(ConfigError, match="XTS"):
        currency_numeric("XTS")


# -- finding 6: expiry against the provider's own clock -------------------------------------

def test_expiry_is_checked_against_the_provider_s_clock(world: World, ledger: Ledger) -> None:
    """A request stamped 2025-12-01 (a producer's clock) for a card that expired 12/25, decided
    by the bank on 2026-11-25: expired (54), whatever the request says."""
    card = ledger.open(world.issue("bank-a", expiry="251231"))
    stamped = datetime(2025, 12, 1, 12, 0, tzinfo=NOW.tzinfo)
    auth = ledger.auth_request(world.pay(T, card, amount=100, when=stamped), received_at=stamped)
    assert ledger.decide(auth, now=NOW).decision.response_code == EXPIRED_CARD


@pytest.mark.parametrize(("expiry", "now", "expired"), [
    ("2611", datetime(2026, 11, 30, 23, 59), False),
    ("2611", datetime(2026, 12, 1, 0, 0), True),
    ("2612", datetime(2027, 1, 1), True),
    ("2701", datetime(2026, 12, 31), False),
])
def test_expiry_boundary(expiry: str, now: datetime, expired: bool) -> None:
    assert decide.expired(expiry, now) is expired


# -- boundaries with literal values (mutants that survived the spot check) ------------------

@pytest.mark.parametrize(("atc", "code"), [(10, REPLAYED_ATC), (11, APPROVED), (110, APPROVED),
                                           (111, REPLAYED_ATC)])
def test_atc_window_is_100_after_the_last_atc(world: World, ledger: Ledger, atc: int,
                                              code: str) -> None:
    from cards.profile import CardState

    assert decide.ATC_WINDOW == 100
    card = ledger.open(world.issue("bank-a", balance=10_000))
    token = card.card.pan_token
    ledger.cards[token] = ledger.cards[token].model_copy(update={"last_atc": 10})  # type: ignore[attr-defined]
    req = world.pay(T, card, amount=100, when=NOW, state=CardState(None, atc=atc - 1))
    assert decide_code(ledger, req) == code


@pytest.mark.parametrize(("amount", "code"), [(500_000, APPROVED), (500_001, EXCEEDS_LIMIT)])
def test_per_transaction_limit_is_inclusive(world: World, ledger: Ledger, amount: int,
                                            code: str) -> None:
    card = ledger.open(world.issue("bank-a", balance=10_000_000))
    assert ledger.adapter.per_txn_limit == 500_000
    assert decide_code(ledger, world.pay(T, card, amount=amount, when=NOW)) == code


@pytest.mark.parametrize(("amount", "code"), [(7_000, APPROVED), (7_001, INSUFFICIENT_FUNDS)])
def test_available_funds_are_inclusive(world: World, ledger: Ledger, amount: int,
                                       code: str) -> None:
    card = ledger.open(world.issue("bank-a", balance=7_000))
    assert decide_code(ledger, world.pay(T, card, amount=amount, when=NOW)) == code
