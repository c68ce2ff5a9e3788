"""``cardbus reader``: the agent process (terminal key module, watcher, bus session, results)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cardbus import vault
from cardbus.emv.data import currency_numeric
from cardbus.errors import CardError, ConfigError
from cardbus.logs import get_logger
from reader_agent.agent import (
    ReaderAgent,
    TapOutcome,
    interactive_pin,
    scripted_pins,
)
from reader_agent.cardthread import in_card_thread, step_timeout
from reader_agent.outcome import await_outcome
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from reader_agent.topup import AppliedLoads, TopupResult, TransitTarget, topup
from reader_agent.watcher import ReaderWatcher
from schemas.payments import PaymentCompleted
from streams.broker import resolve_bootstrap

log = get_logger("reader_agent.runner")


def enrolled_terminals(home: Path | None = None) -> list[str]:
    """Ids of the terminals enrolled on this machine."""
    parties = vault.party_dir("platform", home).parent
    return sorted(p.name.removeprefix("terminal-") for p in parties.glob("terminal-*")
                  if (p / "terminal.json").exists())


def open_terminal(terminal_id: str | None, home: Path | None = None) -> Terminal:
    """The terminal ``terminal_id`` (or the only one enrolled here), keys installed."""
    if terminal_id is None:
        found = enrolled_terminals(home)
        if len(found) != 1:
            raise ConfigError(
                "no terminal enrolled here: run `cardbus terminal enroll --terminal-id T`"
                if not found else f"several terminals enrolled here ({', '.join(found)}): "
                                  "choose one with --terminal-id")
        terminal_id = found[0]
    terminal = Terminal.open(terminal_id, home)
    if not terminal.ready:
        raise ConfigError(f"terminal {terminal_id} has no keys from the platform yet: run "
                          f"`cardbus terminal enroll --terminal-id {terminal_id}` while the "
                          "platform worker runs")
    return terminal


async def enroll(terminal_id: str, bootstrap: str | None, *, timeout: float = 60,
                 providers: int = 1, home: Path | None = None,
                 activate: Callable[[], Awaitable[None]] | None = None) -> Terminal:
    """Create (or reopen) the terminal, publish its enrollment and wait for its keys; with
    ``activate`` (the operator's act, where the caller is the operator too), then activate it
    and wait until the platform's key set says it is active."""
    terminal = Terminal.create(terminal_id, home=home)
    async with TerminalSession(terminal, resolve_bootstrap(bootstrap)) as session:
        await session.enroll(timeout, providers=providers)
        if activate is not None and terminal.status != "active":
            await activate()
            await session.until_active(timeout)
    return terminal


def show_outcome(out: TapOutcome) -> str:
    """One line for a tap, as `cardbus reader` prints it."""
    if out.error:
        return f"[{out.reader}] card not accepted: {out.error}"
    if out.request is not None and out.tap is not None:
        return (f"[{out.reader}] {out.tap.masked_pan}: payment requested, "
                f"{out.request.amount.amount} {out.request.amount.currency}")
    if out.tap is not None:
        return f"[{out.reader}] {out.tap.masked_pan}: tapped (no checkout armed)"
    return f"[{out.reader}] nothing read"


async def run_reader(*, terminal_id: str | None, amount: int | None, currency: str,
                     pin: str | None, bootstrap: str | None, once: bool,
                     result_timeout: float = 30.0) -> int:
    """Watch every reader; tap -> dialogue -> events; show each result and finish the ARPC."""
    terminal = open_terminal(terminal_id)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    async with TerminalSession(terminal, resolve_bootstrap(bootstrap)) as session:
        agent = ReaderAgent(terminal, session, aids=terminal.payment_aids(),
                            pin_source=scripted_pins(pin) if pin else interactive_pin)
        if amount is not None:
            agent.arm(amount, currency)

        async def tap(reader: str, atr: bytes) -> None:
            out = await agent.handle_card(reader, atr)
            print(show_outcome(out), flush=True)
            if out.answer is not None and out.request is not None:
                result = await await_outcome(session, out.request, out.answer,
                                             deadline=result_timeout)
                if result is None:
                    await agent.release(out.request.correlation_id)
                    print(f"[{reader}] no answer from the platform in {result_timeout:.0f}s: "
                          "payment cancelled", flush=True)
                else:
                    if isinstance(result, PaymentCompleted):
                        card = await agent.complete(result)
                        print(f"[{reader}] {result.masked_pan}: "
                              f"{'APPROVED' if result.approved else 'DECLINED'} "
                              f"({result.response_code}) {result.message}; {card}", flush=True)
            if once:
                done.set()

        def on_card(reader: str, atr: bytes, _t: float) -> None:
            def start() -> None:
                task = loop.create_task(tap(reader, atr))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            loop.call_soon_threadsafe(start)

        watcher = ReaderWatcher(on_card).start()
        print(f"terminal {terminal.terminal_id}: watching readers "
              f"({', '.join(sorted(agent.aids.values())) or 'no providers'}); Ctrl-C stops",
              flush=True)
        try:
            await done.wait()
        finally:
            watcher.stop()
            for task in tasks:
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(BaseException):
                    await task
    return 0


async def run_topup(*, amount: int, currency: str, bank_reader: int, transit_reader: int,
                    operator: str, terminal_id: str | None, pin: str | None,
                    bootstrap: str | None, timeout: float = 30.0) -> TopupResult:
    """``cardbus topup``: bank card in one reader pays, the e-purse in another is loaded."""
    from cardbus.readers import reader_for
    from reader_agent.dialogue import Checkout, run_payment
    from reader_agent.pcsc import CardLink, Context, wait_present
    from schemas.base import Money

    terminal = open_terminal(terminal_id)
    op = terminal.operator(operator)
    bank, purse = reader_for(bank_reader).name, reader_for(transit_reader).name
    money = Money(amount=amount, currency=currency)

    def bank_tap() -> tuple[Any, CardLink]:
        ctx = Context()
        wait_present(ctx, bank, timeout=10)
        link = ctx.connect(bank)
        try:
            return run_payment(link, terminal.payment_aids(),
                               Checkout(amount=amount,
                                        currency_numeric=currency_numeric(currency)),
                               terminal.card_auth_public), link
        except BaseException:
            link.disconnect()
            raise

    def open_purse() -> CardLink:
        ctx = Context()
        wait_present(ctx, purse, timeout=10)
        return ctx.connect(purse)

    target = TransitTarget(operator, op.aids[0], open_purse, lambda link: link.disconnect())
    applied = AppliedLoads(terminal.store.path.parent / "applied-loads.json"
                           if terminal.store is not None else None)
    async with TerminalSession(terminal, resolve_bootstrap(bootstrap)) as session:
        tap, link = await in_card_thread(bank_tap, timeout=step_timeout(extra=10),
                                         dispose=lambda late: late[1].disconnect(),
                                         name="bank card")
        if tap.blocked:
            await asyncio.to_thread(link.disconnect)
            return TopupResult("declined", "the bank card's payment application is blocked "
                                           "(pay with it once to get the issuer's script)")
        try:
            the_pin = pin if pin is not None else await asyncio.to_thread(interactive_pin,
                                                                         tap.masked_pan)
            return await topup(session, tap, money, target, pin=the_pin, applied=applied,
                               bank_link=link, timeout=timeout)
        finally:
            with contextlib.suppress(CardError):
                await in_card_thread(link.disconnect, timeout=step_timeout(), name="disconnect")


async def pay_on_reader(session: TerminalSession, reader: int, amount: int, *, pin: str,
                        currency: str = "CNY", timeout: float = 30.0
                        ) -> tuple[PaymentCompleted | None, str]:
    """One payment with the card in virtual reader ``reader``: dialogue, request, answer, and
    the card's second GENERATE AC. Returns the answer (None if there was none) and what the
    card said."""
    from cardbus.readers import reader_for

    terminal = session.terminal
    agent = ReaderAgent(terminal, session, aids=terminal.payment_aids(),
                        pin_source=scripted_pins(pin))
    agent.arm(amount, currency)
    out = await agent.handle_card(reader_for(reader).name, b"")
    if out.error:
        return None, f"card not accepted: {out.error}"
    if out.answer is None or out.request is None:
        return None, "no payment request"
    done = await await_outcome(session, out.request, out.answer, deadline=timeout)
    if done is None:
        await agent.release(out.request.correlation_id)
        return None, f"no answer from the platform in {timeout:.0f}s: payment cancelled"
    if not isinstance(done, PaymentCompleted):
        await agent.release(out.request.correlation_id)
        return None, f"unexpected answer {done.type}"
    return done, await agent.complete(done)


async def run_pay(*, reader: int, amount: int, currency: str, pin: str | None,
                  terminal_id: str | None, bootstrap: str | None) -> int:
    """``cardbus pay``: pay with the card in one virtual reader."""
    terminal = open_terminal(terminal_id)
    the_pin = pin if pin is not None else await asyncio.to_thread(interactive_pin, "card")
    async with TerminalSession(terminal, resolve_bootstrap(bootstrap)) as session:
        done, card = await pay_on_reader(session, reader, amount, pin=the_pin,
                                         currency=currency)
    if done is None:
        print(f"no payment: {card}")
        return PAY_NO_ANSWER if card.startswith("no answer") else PAY_ERROR
    print(payment_line(done, amount, currency, card))
    return PAY_APPROVED if paid(done, amount) else PAY_DECLINED


PAY_APPROVED, PAY_ERROR, PAY_DECLINED, PAY_NO_ANSWER = 0, 1, 3, 4
"""``cardbus pay`` exit codes (the console's table: ok, error, the answer is no, no answer)."""


def paid(done: PaymentCompleted, amount: int) -> bool:
    """Approved for the amount asked (a blocked card's zero-amount check is no payment)."""
    return done.approved and done.amount.amount == amount


def payment_line(done: PaymentCompleted, amount: int, currency: str, card: str) -> str:
    """One line: ``622202******1234 12.50 CNY: APPROVED (00); card accepted (TC)``."""
    verdict = "APPROVED" if done.approved else f"DECLINED ({done.response_code}) {done.message}"
    if done.approved:
        verdict = f"APPROVED ({done.response_code})"
    if done.amount.amount != amount:
        verdict = (f"DECLINED: card blocked (issuer's account check: {done.response_code} "
                   f"{done.message})")
    card = card.removeprefix("approved, ")
    return f"{done.masked_pan} {amount / 100:.2f} {currency}: {verdict}; {card}"
