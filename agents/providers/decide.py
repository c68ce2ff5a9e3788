"""A provider's decisions as pure functions: ``(state, event) -> (new state, events out)``.

No Kafka, no clock, no randomness: every id and time in an output comes from the input event,
and the crypto (``IssuerCrypto``) is deterministic for given keys. So a replay of the recorded
inputs reproduces every decision byte for byte (audit), and unit tests need no broker.

The authorization steps, in order (each a small named check, jPOS-participant style):
duplicate? -> platform signature -> card known -> what the cryptogram covers is this request
(CDOL1: amount, currency, date, unpredictable number, ATC) -> cryptogram (ARQC) -> card blocked
-> expiry (the provider's own clock) -> account currency -> ATC replay/window -> reported lost or
stolen (41, 43) -> card authentication (the terminal's outcome) -> cardholder verification
policy (an online PIN above the adapter's floor) -> PIN (tries counter, block at the limit) ->
per-transaction limit -> available funds -> approve (a hold). A decision with an ARPC carries
the card's pending issuer script (APPLICATION BLOCK for a lost or stolen card, UNBLOCK once the
issuer lifted the block: ``agents.providers.cardstatus``).

The cryptogram is checked before any decline that carries an ARPC: an ARPC is only ever made
for an ARQC that verified, so a bad cryptogram on a blocked or expired card is a decline (82),
never an error.

Response codes of the cryptogram checks (ISO 8583 field 39, as payments hosts use them):
``30`` (format error) when the cryptogram data is not the CDOL1 layout (wrong length, odd hex,
not BCD, not a date); ``82`` (negative cryptogram result) when the ARQC does not verify, or
when it verifies but over other data than the request's own: another amount (9F02), an amount
other (9F03) that is not zero, another currency (5F2A), an unknown currency, a date (9A) more
than a day from the request's time, another unpredictable number (9F37) or ATC, or a
transaction type (9C) that is not a purchase. Cardholder verification: ``Q1`` when the
terminal reports the card failed card authentication; ``1A`` (additional customer
authentication required, a soft decline) above the adapter's CVM floor without an online PIN
(no PIN block, or CVM results 9F34 that do not say online PIN). (The ATC needs no
comparison: the session key the ARQC is checked under comes from the request's ATC.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from agents.providers.cardstatus import pending_script
from agents.providers.state import (
    MAX_PIN_TRIES,
    Account,
    BatchTotal,
    CardRecord,
    ChainHead,
    DecisionNote,
    Hold,
    OpenBatch,
    PinCheck,
)
from cardbus.emv.data import CURRENCY_NUMERIC, TX_PURCHASE, parse_arqc_data
from cardbus.errors import CryptoError, PinBlockError
from cardbus.response_codes import (
    APPROVED,
    BAD_CRYPTOGRAM,
    CARD_AUTH_FAILED,
    DO_NOT_HONOUR,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    FORMAT_ERROR,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    INVALID_CARD,
    LOST_CARD,
    NO_ORIGINAL,
    PIN_REQUIRED,
    PIN_TRIES_EXCEEDED,
    REPLAYED_ATC,
    STOLEN_CARD,
    WRONG_CURRENCY,
)
from schemas.base import Event
from schemas.cards import CardRead
from schemas.cardstatus import IssuerScript, ScriptKind
from schemas.ledger import CardIssued
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.settlement import CurrencyTotal, SettlementBatchClosed

ATC_WINDOW = 100  # an ATC jump larger than this is refused as out of window
CVM_ONLINE_PIN = 0x02  # 9F34 byte 1, low six bits: enciphered PIN verified online
DEFAULT_CVM_FLOOR = 100_000  # minor units above which an online PIN is required (1,000.00)
DATE_SLACK = timedelta(days=1)  # 9A is the terminal's local date: a day either side of UTC


class IssuerCrypto(Protocol):
    """The provider's HSM operations the decisions need (deterministic for given keys)."""

    provider_id: str

    def verify_platform(self, event: Event) -> None:
        """Raise a CryptoError unless ``event`` carries a valid platform signature."""

    def card_token(self, card: CardRead, context: str) -> str:
        """This provider's token of the PAN inside ``card.pan_encrypted``."""

    def verify_arqc(self, card: CardRead, context: str) -> None:
        """Raise CryptogramInvalid unless the card's ARQC verifies (PAN decrypted inside)."""

    def make_arpc(self, card: CardRead, context: str, response_code: str) -> str:
        """The ARPC (method 1, ARC = response code) as hex."""

    def pin_matches(self, card: CardRead, context: str, pin_block: str, pin_key_id: str,
                    pin: PinCheck) -> bool:
        """Whether the PIN block holds the card's PIN (raises PinBlockError if malformed)."""

    def issuer_script(self, card: CardRead, context: str, kind: ScriptKind) -> str:
        """APPLICATION BLOCK/UNBLOCK with its script MAC for this tap (base64 APDU)."""

    def seal(self, event: Event) -> Event:
        """``event`` signed with the provider's identity key."""


def derived_id(kind: str, source_event_id: str) -> str:
    """A deterministic event id for the ``kind`` answer to ``source_event_id``."""
    return hashlib.sha256(f"{kind}:{source_event_id}".encode()).hexdigest()[:32]


def decision_hash(decision: AuthorizationDecided) -> str:
    """The hash the next decision of the partition chains to (canonical bytes, no seal)."""
    return hashlib.sha256(decision.canonical_bytes()).hexdigest().upper()


@dataclass(frozen=True)
class Authorized:
    """The outcome of one authorization request: new state and the decision to publish."""

    decision: AuthorizationDecided
    card: CardRecord | None
    account: Account | None
    chain: ChainHead
    batch: OpenBatch
    duplicate: bool = False


@dataclass
class _Draft:
    code: str
    card: CardRecord | None
    account: Account | None
    arpc_needed: bool = True
    notes: list[str] = field(default_factory=list)


def settle(account: Account, open_batch: int) -> Account:
    """Clear into the balance every hold of a batch closed since (number below the open one).
    The available amount does not change, so this may run whenever the card is next used."""
    if all(h.batch >= open_batch for h in account.holds.values()):
        return account
    cleared = sum(h.amount for h in account.holds.values() if h.batch < open_batch)
    return account.model_copy(update={
        "balance": account.balance - cleared,
        "holds": {k: h for k, h in account.holds.items() if h.batch >= open_batch}})


def _check(req: AuthorizationRequested, card: CardRecord | None, account: Account | None,
           crypto: IssuerCrypto, batch: int, now: datetime, cvm_floor: int) -> _Draft:
    """Run the checks in order; return the response code and the updated card/account."""
    try:
        crypto.verify_platform(req)
    except CryptoError:
        return _Draft(DO_NOT_HONOUR, card, account, arpc_needed=False)
    if card is None or account is None or card.pan_token != req.card.pan_token:
        return _Draft(INVALID_CARD, card, account, arpc_needed=False)
    try:
        if crypto.card_token(req.card, req.correlation_id) != card.pan_token:
            return _Draft(INVALID_CARD, card, account, arpc_needed=False)
    except CryptoError:
        return _Draft(INVALID_CARD, card, account, arpc_needed=False)
    covers = cryptogram_covers(req)
    if covers is not None:
        return _Draft(covers, card, account, arpc_needed=False)
    try:
        crypto.verify_arqc(req.card, req.correlation_id)
    except CryptoError:
        return _Draft(BAD_CRYPTOGRAM, card, account, arpc_needed=False)
    if card.status == "blocked":
        return _Draft(PIN_TRIES_EXCEEDED, card, account)
    if expired(card.expiry, now):
        return _Draft(EXPIRED_CARD, card, account)
    if req.amount.currency != account.currency:
        return _Draft(WRONG_CURRENCY, card, account)
    atc = req.card.atc
    if card.last_atc is not None and not card.last_atc < atc <= card.last_atc + ATC_WINDOW:
        return _Draft(REPLAYED_ATC, card, account, arpc_needed=False)
    card = card.model_copy(update={"last_atc": atc})
    if card.reported is not None:  # lost or stolen: declined, and blocked by a script
        return _Draft(LOST_CARD if card.reported == "lost" else STOLEN_CARD, card, account)
    if req.card.card_auth == "failed":
        return _Draft(CARD_AUTH_FAILED, card, account)
    if req.amount.amount > cvm_floor and not online_pin(req):
        return _Draft(PIN_REQUIRED, card, account)
    return _after_cryptogram(req, card, account, crypto, batch)


def online_pin(req: AuthorizationRequested) -> bool:
    """Whether the cardholder was verified by an online PIN: a PIN block, and CVM results
    (9F34) whose method is enciphered PIN online (02, with or without the "next CVM" bit)."""
    return (req.pin_block is not None and req.pin_key_id is not None
            and int(req.card.cvm_results[:2], 16) & 0x3F == CVM_ONLINE_PIN)


def _after_cryptogram(req: AuthorizationRequested, card: CardRecord, account: Account,
                      crypto: IssuerCrypto, batch: int) -> _Draft:
    """PIN, limit, funds: the checks after the card proved the transaction."""
    if req.pin_block is not None and req.pin_key_id is not None:
        try:
            ok = crypto.pin_matches(req.card, req.correlation_id, req.pin_block,
                                    req.pin_key_id, card.pin)
        except PinBlockError:
            ok = False
        if not ok:
            tries = card.pin_tries + 1
            if tries >= MAX_PIN_TRIES:
                card = card.model_copy(update={"pin_tries": tries, "status": "blocked"})
                return _Draft(PIN_TRIES_EXCEEDED, card, account)
            return _Draft(INCORRECT_PIN, card.model_copy(update={"pin_tries": tries}), account)
        card = card.model_copy(update={"pin_tries": 0})
    if req.amount.amount > card.per_txn_limit:
        return _Draft(EXCEEDS_LIMIT, card, account)
    if req.amount.amount > account.available:
        return _Draft(INSUFFICIENT_FUNDS, card, account)
    holds = {**account.holds, req.event_id: Hold(amount=req.amount.amount,
                                                 currency=req.amount.currency, batch=batch)}
    return _Draft(APPROVED, card, account.model_copy(update={"holds": holds}))


def cryptogram_covers(req: AuthorizationRequested) -> str | None:
    """None if the data the card's ARQC covers (``card.cdol_data``) is this request's own
    transaction; else the decline code (``30`` malformed, ``82`` another transaction)."""
    try:
        data = parse_arqc_data(bytes.fromhex(req.card.cdol_data))
    except ValueError:
        return FORMAT_ERROR
    currency = CURRENCY_NUMERIC.get(req.amount.currency)
    same = (data.amount == req.amount.amount and data.amount_other == 0
            and currency is not None and data.currency == currency
            and data.unpredictable_number.hex().upper() == req.card.unpredictable_number
            and data.tx_type == TX_PURCHASE
            and _near(data.date, req.occurred_at))
    return None if same else BAD_CRYPTOGRAM


def _near(yymmdd: str, when: datetime) -> bool:
    """Whether the card's transaction date is within a day of ``when`` (UTC)."""
    day = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    return abs(day - when.date()) <= DATE_SLACK


def expired(expiry_yymm: str, now: datetime) -> bool:
    """Whether a card valid through the month ``expiry_yymm`` is expired at ``now``."""
    return (now.year % 100, now.month) > (int(expiry_yymm[:2]), int(expiry_yymm[2:]))


def authorize(
    req: AuthorizationRequested,
    *,
    card: CardRecord | None,
    account: Account | None,
    chain: ChainHead,
    batch: OpenBatch,
    processed: AuthorizationDecided | None,
    crypto: IssuerCrypto,
    now: datetime | None = None,
    cvm_floor: int = DEFAULT_CVM_FLOOR,
) -> Authorized:
    """Decide on one authorization request. A duplicate gets the original decision, unchanged.

    ``now`` is the provider's own clock for the card's expiry (the wiring passes the broker's
    append time of the request record); without it, the request's time (the platform's)."""
    if processed is not None:
        return Authorized(processed, card, account, chain, batch, duplicate=True)
    if account is not None:
        account = settle(account, batch.number)
    draft = _check(req, card, account, crypto, batch.number,
                   req.occurred_at if now is None else now, cvm_floor)
    approved = draft.code == APPROVED
    script = pending_script(draft.card) if draft.arpc_needed else None
    sequence = chain.sequence + 1
    decision = AuthorizationDecided(
        event_id=derived_id("decision", req.event_id),
        correlation_id=req.correlation_id,
        occurred_at=req.occurred_at,
        producer=f"provider:{crypto.provider_id}",
        provider_id=crypto.provider_id,
        request_event_id=req.event_id,
        pan_token=req.card.pan_token,
        amount=req.amount,
        approved=approved,
        response_code=draft.code,
        auth_code=derived_id("auth", req.event_id)[:6].upper() if approved else None,
        arpc=(crypto.make_arpc(req.card, req.correlation_id, draft.code)
              if draft.arpc_needed else None),
        chain_id=chain.chain_id,
        sequence=sequence,
        prev_hash=chain.last_hash,
        issuer_script=None if script is None else IssuerScript(
            kind=script, command=crypto.issuer_script(req.card, req.correlation_id, script)),
    )
    sealed = crypto.seal(decision)
    assert isinstance(sealed, AuthorizationDecided)
    new_chain = ChainHead(chain_id=chain.chain_id, sequence=sequence,
                          last_hash=decision_hash(sealed))
    return Authorized(sealed, draft.card, draft.account, new_chain,
                      _add_to_batch(batch, req, sealed), duplicate=False)


def _add_to_batch(batch: OpenBatch, req: AuthorizationRequested,
                  decision: AuthorizationDecided) -> OpenBatch:
    update: dict[str, object] = {
        "opened_at": batch.opened_at or req.occurred_at.isoformat(),
        "first_sequence": decision.sequence if batch.first_sequence is None
        else batch.first_sequence,
        "last_sequence": decision.sequence,
    }
    if decision.approved:
        update["totals"] = _add_to_totals(batch, req.amount.currency, approved_count=1,
                                          approved_amount=req.amount.amount)
    else:
        update["declined"] = batch.declined + 1
    return batch.model_copy(update=update)


@dataclass(frozen=True)
class Reversed:
    """The outcome of a reversal request."""

    answer: ReversalCompleted
    account: Account | None
    batch: OpenBatch


def reverse(
    rev: ReversalRequested,
    *,
    account: Account | None,
    batch: OpenBatch,
    decision: AuthorizationDecided | DecisionNote | None,
    crypto: IssuerCrypto,
) -> Reversed:
    """Undo an approval: release its hold (or credit back if already cleared). Idempotent:
    a second reversal of the same payment finds nothing left to undo and says so, unchanged.
    ``decision``: the original decision, or the card record's note of it (approved, amount)."""
    reversed_now = False
    code = NO_ORIGINAL
    if account is not None:
        account = settle(account, batch.number)
    original = rev.original_event_id
    hold = account.holds.get(original) if account is not None else None
    if account is not None and hold is not None:
        # still held (this batch): the hold is the approval, whether or not its decision is
        # still among the card's recent ones; release it
        code, reversed_now = APPROVED, True
        account = account.model_copy(update={
            "holds": {k: v for k, v in account.holds.items() if k != original},
            "reversed": account.with_reversed(original)})
        batch = _count_reversal(batch, hold.amount, hold.currency)
    elif decision is not None and decision.approved and account is not None:
        code = APPROVED
        if original not in account.reversed:
            # cleared by a closed batch: credit it back once, in this batch
            account = account.model_copy(update={
                "balance": account.balance + decision.amount.amount,
                "reversed": account.with_reversed(original)})
            reversed_now = True
            batch = _count_reversal(batch, decision.amount.amount, decision.amount.currency)
    elif decision is not None and not decision.approved:
        code = APPROVED  # nothing was authorized: a reversal of a decline is a no-op
    answer = ReversalCompleted(
        event_id=derived_id("reversal", rev.event_id),
        correlation_id=rev.correlation_id,
        occurred_at=rev.occurred_at,
        producer=f"provider:{crypto.provider_id}",
        provider_id=crypto.provider_id,
        original_event_id=rev.original_event_id,
        pan_token=rev.pan_token,
        amount=rev.amount,
        reversed=reversed_now or code == APPROVED,
        response_code=code,
    )
    sealed = crypto.seal(answer)
    assert isinstance(sealed, ReversalCompleted)
    return Reversed(sealed, account, batch)


def _count_reversal(batch: OpenBatch, amount: int, currency: str) -> OpenBatch:
    return batch.model_copy(update={"totals": _add_to_totals(
        batch, currency, reversed_count=1, reversed_amount=amount)})


def _add_to_totals(batch: OpenBatch, currency: str, **add: int) -> dict[str, BatchTotal]:
    """The batch's totals with ``add`` (field -> amount) added to ``currency``'s."""
    t = batch.totals.get(currency, BatchTotal())
    return {**batch.totals, currency: t.model_copy(
        update={name: getattr(t, name) + n for name, n in add.items()})}


@dataclass(frozen=True)
class Settled:
    """A closed batch (None if it had no decision) and the batch that is open now."""

    closed: SettlementBatchClosed | None
    batch: OpenBatch


def close_batch(
    *,
    batch_id: str,
    closed_at_event: Event,
    batch: OpenBatch,
    crypto: IssuerCrypto,
) -> Settled:
    """Cut-over: total the batch and open the next. Its holds are cleared into their accounts
    when each card is next used (``settle``); no card record is read or written here."""
    if batch.first_sequence is None or batch.last_sequence is None:
        return Settled(None, batch)
    event = SettlementBatchClosed(
        event_id=derived_id("batch", closed_at_event.event_id),
        correlation_id=batch_id,
        occurred_at=closed_at_event.occurred_at,
        producer=f"provider:{crypto.provider_id}",
        provider_id=crypto.provider_id,
        batch_id=batch_id,
        opened_at=(datetime.fromisoformat(batch.opened_at) if batch.opened_at
                   else closed_at_event.occurred_at),
        closed_at=closed_at_event.occurred_at,
        first_sequence=batch.first_sequence,
        last_sequence=batch.last_sequence,
        declined_count=batch.declined,
        totals=tuple(
            CurrencyTotal(currency=cur, approved_count=t.approved_count,
                          approved_amount=t.approved_amount, reversed_count=t.reversed_count,
                          reversed_amount=t.reversed_amount,
                          net_amount=t.approved_amount - t.reversed_amount)
            for cur, t in sorted(batch.totals.items())
        ),
    )
    sealed = crypto.seal(event)
    assert isinstance(sealed, SettlementBatchClosed)
    return Settled(sealed, OpenBatch(number=batch.number + 1))


def open_card(ev: CardIssued, current: CardRecord | None) -> tuple[CardRecord, Account] | None:
    """A card issued: its record and account, or None if it is already open (idempotent)."""
    if current is not None:
        return None
    record = CardRecord(pan_token=ev.pan_token, masked_pan=ev.masked_pan,
                        account_id=ev.account_id, psn=ev.psn, expiry=ev.expiry,
                        pin=PinCheck(pvki=ev.pvki, sealed_value=ev.pin_verification_encrypted),
                        per_txn_limit=ev.per_txn_limit)
    account = Account(account_id=ev.account_id, currency=ev.currency,
                      opening_balance=ev.opening_balance, balance=ev.opening_balance)
    return record, account

