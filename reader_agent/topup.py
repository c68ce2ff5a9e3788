"""The terminal side of a transit top-up (patent figure 4), for the PC/SC agent and software
terminals alike.

    bank card  -> PaymentRequested(purpose="transit_load") -> PaymentCompleted (approved?)
    transit card: INITIALIZE FOR LOAD -> TransitLoadRequested (card MAC1)
               -> TransitLoadAuthorized (operator MAC2, via the platform)
    transit card: CREDIT FOR LOAD -> TransitLoadApplied (card TAC)  | TransitLoadAborted(reason)
               -> TransitLoadConfirmed (operator, via the platform)

Card I/O is blocking (PC/SC) and runs in threads; anything with ``transmit`` works (a PC/SC
``CardLink`` or an in-process ``AppletLink``). A redelivered ``TransitLoadAuthorized`` never
credits the card twice: the request ids this terminal applied are remembered (``AppliedLoads``,
optionally in a file) and repeats are ignored; the card's load counter refuses a stale MAC2 too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from cardbus.crypto.transit import probe_terminal_id
from cardbus.errors import CardError
from cardbus.logs import bind_correlation, get_logger
from reader_agent.dialogue import (
    EmvTap,
    Link,
    LoadInit,
    PurseTap,
    complete_payment,
    credit_load,
    init_load,
    read_purse,
)
from reader_agent.outcome import await_outcome
from reader_agent.requests import Sale
from reader_agent.terminal import Terminal
from schemas.base import Event, Money, header
from schemas.cards import CardTapped
from schemas.payments import PaymentCompleted, PaymentRequested
from schemas.transit import (
    PurseProbe,
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)

log = get_logger("reader_agent.topup")

Outcome = Literal["loaded", "declined", "refused", "aborted", "timeout", "unconfirmed"]


class LoadBus(Protocol):
    """What a top-up needs from the bus (``TerminalSession`` satisfies it)."""

    terminal: Terminal

    def expect(self, correlation_id: str) -> asyncio.Future[Event]: ...

    async def publish_tap(self, tapped: CardTapped) -> None: ...

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]: ...

    async def cancel(self, req: PaymentRequested) -> None: ...

    async def publish_load(self, event: Event, key: str) -> None: ...


class AppliedLoads:
    """Load request ids whose MAC2 this terminal already wrote to a card."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.ids: set[str] = set()
        if path is not None and path.exists():
            self.ids = set(json.loads(path.read_text()))

    def __contains__(self, request_id: object) -> bool:
        return request_id in self.ids

    def add(self, request_id: str) -> None:
        self.ids.add(request_id)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self.ids)))
            tmp.replace(self.path)


@dataclass
class TopupResult:
    """How a top-up ended, and what the user is shown."""

    outcome: Outcome
    reason: str
    payment: PaymentCompleted | None = None
    balance_before: int | None = None
    balance_after: int | None = None
    request: TransitLoadRequested | None = None
    authorized: TransitLoadAuthorized | None = None
    applied: TransitLoadApplied | None = None
    aborted: TransitLoadAborted | None = None
    confirmed: TransitLoadConfirmed | None = None
    ignored_repeats: int = 0

    def summary(self) -> str:
        code = self.payment.response_code if self.payment else "--"
        bal = "" if self.balance_after is None else f", balance {self.balance_after}"
        return f"top-up {self.outcome} (payment {code}){bal}: {self.reason}"


L = TypeVar("L", bound=Link)


@dataclass(frozen=True)
class TransitTarget(Generic[L]):
    """The transit card to load: its operator, AID, and how to reach it (blocking opener,
    and what closes what it opened: a PC/SC card link, or nothing for an in-process one)."""

    operator_id: str
    aid: str
    open_link: Callable[[], L]
    close_link: Callable[[L], None] = lambda _link: None


def _now() -> datetime:
    return datetime.now(UTC)


async def _next(bus: LoadBus, payment_id: str, want: tuple[type[Event], ...], timeout: float,
                accept: Callable[[Event], bool] = lambda _e: True) -> Event | None:
    """The next result for ``payment_id`` of a wanted type that ``accept``s; None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        fut = bus.expect(payment_id)
        try:
            ev = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return None
        if accept(ev) and isinstance(ev, want):
            return ev
        log.info("result ignored while waiting", got=ev.type, event_id=ev.event_id)


async def pay_for_topup(bus: LoadBus, tap: EmvTap, amount: Money, *, pin: str | None,
                        bank_link: Link | None = None, reader: str = "bank",
                        timeout: float = 30.0) -> PaymentCompleted | None:
    """Step b: the bank payment with ``purpose="transit_load"``; the ARPC goes to the card if
    it is still there. None if the platform did not answer in time."""
    term = bus.terminal
    tapped, req = term.events(tap, reader=reader, atr="3B00", now=_now(),
                              sale=Sale(amount, term.merchant, pin, "transit_load"))
    assert req is not None
    await bus.publish_tap(tapped)
    done = await await_outcome(bus, req, await bus.request(req), deadline=timeout)
    if done is None:
        return None
    if not isinstance(done, PaymentCompleted):
        done_ev = await _next(bus, req.correlation_id, (PaymentCompleted,), timeout)
        if done_ev is None:
            return None
        done = done_ev
    assert isinstance(done, PaymentCompleted)
    if bank_link is not None and done.arpc:
        try:
            await asyncio.to_thread(complete_payment, bank_link, tap,
                                    done.response_code.encode("ascii"), bytes.fromhex(done.arpc))
        except CardError as exc:
            log.info("bank card left before the ARPC", error=str(exc))
    return done


async def topup(bus: LoadBus, tap: EmvTap, amount: Money, target: TransitTarget[Any], *,
                pin: str | None, applied: AppliedLoads, bank_link: Link | None = None,
                timeout: float = 30.0) -> TopupResult:
    """The whole top-up from a finished bank-card dialogue (``tap``) to the operator's
    confirmation."""
    done = await pay_for_topup(bus, tap, amount, pin=pin, bank_link=bank_link, timeout=timeout)
    if done is None:
        return TopupResult("timeout", "no answer to the payment from the platform")
    with bind_correlation(done.correlation_id):
        if not done.approved:
            return TopupResult("declined", f"bank declined: {done.response_code} "
                                           f"{done.message}", payment=done)
        return await load_card(bus, done, tap.pan_token, amount, target, applied=applied,
                               timeout=timeout)


async def load_card(bus: LoadBus, payment: PaymentCompleted, funding_pan_token: str,
                    amount: Money, target: TransitTarget[Any], *, applied: AppliedLoads,
                    timeout: float = 30.0) -> TopupResult:
    """Steps c-f, after the funding payment was approved."""
    term, pid = bus.terminal, payment.correlation_id
    res = TopupResult("aborted", "", payment=payment)
    try:
        link = await asyncio.to_thread(target.open_link)
    except CardError as exc:
        res.reason = (f"transit card not readable ({exc}); the platform reverses the payment "
                      "when no load arrives")
        return res
    try:
        try:
            purse: PurseTap = await asyncio.to_thread(read_purse, link, target.aid)
            init: LoadInit = await asyncio.to_thread(init_load, link, amount.amount,
                                                     term.terminal_id)
        except CardError as exc:
            res.reason = (f"transit card: {exc}; the platform reverses the payment when no "
                          "load arrives")
            return res
        res.balance_before = init.balance
        req = term.hsm.mac_event(TransitLoadRequested(
            **header(f"terminal:{term.terminal_id}", pid), terminal_id=term.terminal_id,
            operator_id=target.operator_id, funding_payment_id=pid,
            funding_pan_token=funding_pan_token, aid=target.aid, card_token=purse.card_token,
            amount=amount, balance_before=init.balance, load_counter=init.online_seq,
            card_random=init.random.hex().upper(), mac1=init.mac1.hex().upper()))
        res.request = req
        await bus.publish_load(req, funding_pan_token)
        log.info("transit load requested", amount=amount.amount, balance=init.balance)

        def ours(ev: Event) -> bool:
            if isinstance(ev, TransitLoadConfirmed):
                return True
            rid = getattr(ev, "request_event_id", None)
            if rid in applied:  # a redelivered load command: the card has it already
                res.ignored_repeats += 1
                log.info("load command already applied: ignored", request_event_id=rid)
                return False
            return rid == req.event_id

        answer = await _next(bus, pid, (TransitLoadAuthorized, TransitLoadConfirmed), timeout,
                             ours)
        if answer is None:
            res.outcome, res.reason = "timeout", "no load authorization from the operator"
            return res
        if isinstance(answer, TransitLoadConfirmed):
            res.outcome, res.confirmed = "refused", answer
            res.reason = answer.reason or "operator refused the load"
            return res
        assert isinstance(answer, TransitLoadAuthorized)
        res.authorized = answer
        why = _mismatch(answer, init, amount)
        tac: bytes | None = None
        if why is None:
            try:
                tac = await asyncio.to_thread(credit_load, link, answer.date_time,
                                              bytes.fromhex(answer.mac2))
            except CardError as exc:
                why = f"card did not take the load: {exc}"
        if tac is None:
            evidence = await asyncio.to_thread(probe_purse, link, target.aid, answer, amount)
            res.aborted = term.hsm.mac_event(TransitLoadAborted(
                **header(f"terminal:{term.terminal_id}", pid), terminal_id=term.terminal_id,
                operator_id=target.operator_id, request_event_id=req.event_id,
                funding_pan_token=funding_pan_token, card_token=purse.card_token,
                reason=why or "unknown", evidence=evidence))
            await bus.publish_load(res.aborted, funding_pan_token)
            log.warning("transit load aborted", reason=why, evidence=evidence is not None)
            res.reason = (f"{why}; payment reversed once the operator checks the card's "
                          "evidence" if evidence is not None else
                          f"{why}; the card could not show it was not loaded: the top-up "
                          "goes to reconciliation")
        else:
            applied.add(req.event_id)  # before telling anyone: never credit twice
            res.applied = term.hsm.mac_event(TransitLoadApplied(
                **header(f"terminal:{term.terminal_id}", pid), terminal_id=term.terminal_id,
                operator_id=target.operator_id, request_event_id=req.event_id,
                funding_pan_token=funding_pan_token, card_token=purse.card_token,
                amount=amount, new_balance=answer.new_balance, load_counter=init.online_seq,
                tac=tac.hex().upper()))
            res.balance_after = answer.new_balance
            await bus.publish_load(res.applied, funding_pan_token)
            log.info("transit load applied", new_balance=answer.new_balance)
        conf = await _next(bus, pid, (TransitLoadConfirmed,), timeout, ours)
        if conf is None:
            res.outcome = "unconfirmed" if tac is not None else "aborted"
            res.reason = res.reason or "load applied; operator confirmation not received yet"
            return res
        assert isinstance(conf, TransitLoadConfirmed)
        res.confirmed = conf
        if tac is not None and conf.confirmed:
            res.outcome, res.reason = "loaded", f"loaded {amount.amount}, confirmed"
            res.balance_after = conf.balance
        elif tac is not None:
            res.outcome, res.reason = "unconfirmed", conf.reason or "operator did not confirm"
        elif conf.outcome == "unresolved":
            res.outcome = "unconfirmed"
            res.reason = f"load not proven aborted ({conf.reason}): reconciliation"
        else:
            res.outcome = "aborted"
        return res
    finally:
        await asyncio.to_thread(target.close_link, link)


def probe_purse(link: Link, aid: str, auth: TransitLoadAuthorized, amount: Money
                ) -> PurseProbe | None:
    """The card's evidence after MAC2 (``cardbus.crypto.transit.probe_terminal_id``): an
    INITIALIZE FOR LOAD naming the MAC2 challenge, whose MAC1 states the purse's balance and
    online sequence number. It also voids the MAC2 on the card. None if the card is gone."""
    try:
        read_purse(link, aid)
        init = init_load(link, amount.amount, probe_terminal_id(bytes.fromhex(auth.mac2)))
    except CardError as exc:
        log.info("no card evidence for the aborted load", error=str(exc))
        return None
    return PurseProbe(balance=init.balance, load_counter=init.online_seq,
                      card_random=init.random.hex().upper(), probe_amount=amount.amount,
                      mac1=init.mac1.hex().upper())


def _mismatch(auth: TransitLoadAuthorized, init: LoadInit, amount: Money) -> str | None:
    """Why an authorization does not fit the load the card started (None if it fits)."""
    if auth.amount != amount:
        return f"authorized amount {auth.amount.amount} is not {amount.amount}"
    if auth.load_counter != init.online_seq:
        return f"authorized load counter {auth.load_counter} is not {init.online_seq}"
    if auth.new_balance != init.balance + amount.amount:
        return f"authorized balance {auth.new_balance} is not {init.balance + amount.amount}"
    return None
