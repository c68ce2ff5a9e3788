"""The main job: the whole system end to end, the way a new user first meets it.

Starts what is not running (broker, pcscd with virtual readers), makes the keys, topics and
workers (platform, two banks, the transit operator), issues virtual cards and puts them in the
readers, enrolls a terminal, then runs: key provisioning and enrollment, an approved payment
with each bank card over real PC/SC, a declined payment (wrong PIN), a payment with the card of
a bank that runs an ISO 8583 host (jPOS, behind the bank-iso bridge), a lost card (declined 41
and blocked on the card by its issuer's script, then unblocked), a transit top-up, a transit
purse installed on a bank card by the platform's card manager and topped up there, and a
settlement batch checked against this run's approvals. Prints a summary table and stops
everything it started. Exit code 0 only if every step behaved as expected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from console.stack import TERMINAL_ID, LocalStack

BANK_A_READER, BANK_B_READER, TRANSIT_READER, ISO_READER = 0, 1, 2, 3
PURSE_AID = "A000000632010105"  # the catalogue's transit purse instance
console = Console(stderr=True)


@dataclass
class Step:
    """One demo step and how it went."""

    name: str
    expected: str
    outcome: str = "not run"
    code: str = "--"
    latency_ms: float | None = None
    ok: bool = False


def _say(msg: str) -> None:
    console.print(f"[dim]·[/dim] {msg}")


async def _timed(step: Step, work: Callable[[Step], Awaitable[None]]) -> None:
    """Run one step, time it and say how it went (an exception is the step's outcome)."""
    from aiokafka.errors import KafkaError

    _say(f"{step.name} ...")
    t0 = time.perf_counter()
    try:
        await work(step)
    except (Exception, KafkaError) as exc:  # noqa: BLE001 - reported in the summary
        step.outcome = f"error: {exc}"[:90]
    step.latency_ms = (time.perf_counter() - t0) * 1000
    mark = "[green]ok[/green]" if step.ok else "[red]UNEXPECTED[/red]"
    _say(f"{step.name}: {step.outcome} ({step.code}) {mark}")


class DemoRun:
    """The demo's steps over one running stack, each a method ``(step) -> None`` that fills in
    its ``Step``."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.session: Any = None
        self.approved_a = 0
        self.card_a: Any = None
        self.card_b: Any = None

    async def provisioning(self, s: Step) -> None:
        from console.commands.reader import set_terminal_status
        from reader_agent.runner import enroll, open_terminal

        stack = self.stack
        await enroll(TERMINAL_ID, stack.bootstrap, timeout=120, providers=len(stack.providers),
                     activate=lambda: set_terminal_status(stack.bootstrap, TERMINAL_ID))
        term = open_terminal(TERMINAL_ID)
        s.outcome = f"terminal {TERMINAL_ID} keys from {len(term.card_auth)} providers"
        s.code, s.ok = "keys", term.ready and len(term.card_auth) == len(stack.providers)

    async def cards(self) -> None:
        """Issue the demo's cards and put them into the virtual readers."""
        from cards import serve
        from console.commands.cards import issue_card

        def issue(provider: str, **kw: Any) -> Awaitable[Any]:
            return asyncio.to_thread(issue_card, provider, bootstrap=self.stack.bootstrap, **kw)

        card_a: Any = await issue("bank-a", pin="1234", balance=100_000)
        card_b: Any = await issue("bank-b", pin="4321", balance=50_000)
        purse: Any = await issue("transit", balance=500)
        card_iso: Any = await issue("bank-iso", pin="2468", balance=30_000)
        self.card_a, self.card_b = card_a, card_b
        for card, reader in ((card_a, BANK_A_READER), (card_b, BANK_B_READER),
                             (purse, TRANSIT_READER), (card_iso, ISO_READER)):
            serve.insert(card.card_id, reader)
        _say(f"cards: {card_a.masked()} (bank-a), {card_b.masked()} (bank-b), transit purse, "
             f"{card_iso.masked()} (bank-iso, an ISO 8583 host) in virtual readers "
             f"{BANK_A_READER}/{BANK_B_READER}/{TRANSIT_READER}/{ISO_READER}")

    def payment(self, reader: int, amount: int, pin: str, want: str
                ) -> Callable[[Step], Awaitable[None]]:
        """A payment step: the card in ``reader`` pays ``amount``; ``want`` is the code."""
        from reader_agent.runner import pay_on_reader

        async def pay(step: Step) -> None:
            done, card_says = await pay_on_reader(self.session, reader, amount, pin=pin)
            if done is None:
                step.outcome = card_says
                return
            step.code = done.response_code
            step.outcome = f"{done.masked_pan} {amount / 100:.2f} CNY: {done.message}; " \
                           f"{card_says}"
            step.ok = done.response_code == want
            if step.ok and done.approved and done.provider_id == "bank-a":
                self.approved_a += amount

        return pay

    async def top_up(self, s: Step) -> None:
        from reader_agent.runner import run_topup

        result = await run_topup(amount=20_00, currency="CNY", bank_reader=BANK_A_READER,
                                 transit_reader=TRANSIT_READER, operator="transit",
                                 terminal_id=TERMINAL_ID, pin="1234",
                                 bootstrap=self.stack.bootstrap)
        s.code = result.payment.response_code if result.payment else "--"
        s.outcome = result.summary()
        s.ok = result.outcome == "loaded" and result.balance_after == 500 + 20_00
        if s.ok:
            self.approved_a += 20_00

    async def install(self, s: Step) -> None:
        """The platform's card manager installs a transit purse on the bank-a card (SCP03,
        relayed by the terminal; the purse prepared by the operator)."""
        from reader_agent.cardmgmt import run_card_management
        from schemas.cardmgmt import CardOperation

        done = await run_card_management(
            reader=BANK_A_READER, issuer_id="bank-a", terminal_id=TERMINAL_ID,
            operations=[CardOperation(action="install", app="transit")],
            bootstrap=self.stack.bootstrap)
        listed = [a.aid for a in done.applications if a.kind == "application"]
        s.code = "9000" if done.ok else f"{done.sw or 0:04X}"
        s.outcome = (f"{self.card_a.masked()}: installed {', '.join(done.installed)}; "
                     f"{len(listed)} applications, {done.steps_relayed} APDUs relayed"
                     if done.ok else f"refused: {done.reason}")
        s.ok = done.ok and PURSE_AID in done.installed and PURSE_AID in listed

    async def top_up_installed(self, s: Step) -> None:
        from reader_agent.runner import run_topup

        result = await run_topup(amount=15_00, currency="CNY", bank_reader=BANK_A_READER,
                                 transit_reader=BANK_A_READER, operator="transit",
                                 terminal_id=TERMINAL_ID, pin="1234",
                                 bootstrap=self.stack.bootstrap)
        s.code = result.payment.response_code if result.payment else "--"
        s.outcome = result.summary()
        s.ok = result.outcome == "loaded" and result.balance_after == 15_00
        if s.ok:
            self.approved_a += 15_00

    def lost_card(self, step: str) -> Callable[[Step], Awaitable[None]]:
        """The bank-b card reported lost (``reported``), tapped again (``blocked``), unblocked
        by its issuer and tapped twice (``unblocked``: its script, then a payment)."""
        from console.commands.cardmgmt import report_card
        from reader_agent.runner import pay_on_reader

        async def tap(s: Step, amount: int) -> str:
            done, says = await pay_on_reader(self.session, BANK_B_READER, amount, pin="4321")
            s.code = done.response_code if done is not None else "--"
            s.outcome = f"{self.card_b.masked()}: " + (
                f"{done.message}; {says}" if done is not None else says)
            return says

        async def run(s: Step) -> None:
            if step == "reported":
                await report_card(self.card_b, "lost", self.stack.bootstrap)
                says = await tap(s, 30_00)
                s.ok = s.code == "41" and says.endswith("BLOCK applied (9000)")
            elif step == "blocked":
                says = await tap(s, 30_00)
                s.ok = s.code == "41" and says.startswith("card blocked (AAC)")
            else:
                await report_card(self.card_b, None, self.stack.bootstrap)
                says = await tap(s, 30_00)
                unblocked = says.endswith("UNBLOCK applied (9000)")
                says = await tap(s, 30_00)
                s.ok = unblocked and s.code == "00" and says == "approved, card accepted (TC)"
                s.outcome = f"UNBLOCK applied (9000), then {s.outcome}"

        return run

    async def settlement(self, s: Step) -> None:
        from console.commands.settle import settle

        result = await settle(self.stack.bootstrap, "bank-a", wait=20)
        assert result is not None
        batch, parts, sums = result
        net = sums.get("CNY", {}).get("net_amount", 0)
        s.code = "batch"
        s.outcome = f"{batch}: {len(parts)} part(s), net {net / 100:.2f} CNY"
        s.ok = net == self.approved_a


async def _run(stack: LocalStack, steps: list[Step]) -> None:
    from console.commands.settle import settle
    from reader_agent.runner import open_terminal
    from reader_agent.session import TerminalSession

    demo = DemoRun(stack)
    await _timed(steps[0], demo.provisioning)
    if not steps[0].ok:
        return
    await settle(stack.bootstrap, "bank-a", wait=3)  # close anything an earlier run left open
    await demo.cards()
    async with TerminalSession(open_terminal(TERMINAL_ID), stack.bootstrap) as session:
        demo.session = session
        await _timed(steps[1], demo.payment(BANK_A_READER, 12_50, "1234", "00"))
        await _timed(steps[2], demo.payment(BANK_B_READER, 88_00, "4321", "00"))
        await _timed(steps[3], demo.payment(BANK_A_READER, 5_00, "0000", "55"))
        await _timed(steps[4], demo.payment(ISO_READER, 64_00, "2468", "00"))
        for i, step in ((5, "reported"), (6, "blocked"), (7, "unblocked")):
            await _timed(steps[i], demo.lost_card(step))
    await _timed(steps[8], demo.top_up)
    await _timed(steps[9], demo.install)
    await _timed(steps[10], demo.top_up_installed)
    await _timed(steps[11], demo.settlement)


def run_demo() -> int:
    """Run the demo; 0 only if every step behaved as expected."""
    steps = [
        Step("provisioning + enrollment", "terminal gets keys for every provider"),
        Step("payment, bank-a card", "approved 00, card accepts ARPC"),
        Step("payment, bank-b card", "approved 00"),
        Step("payment, wrong PIN", "declined 55"),
        Step("payment, ISO 8583 bank card", "approved 00 by the jPOS host, card accepts ARPC"),
        Step("lost card (bank-b): reported, tapped", "declined 41, card applies BLOCK"),
        Step("lost card: next tap", "blocked on the card (6283), declined 41"),
        Step("lost card: unblocked, tapped twice", "card applies UNBLOCK, then approved 00"),
        Step("transit top-up 20.00", "paid, loaded, confirmed"),
        Step("install transit on bank-a card", "platform's SCP03 channel installs the purse"),
        Step("top-up 15.00 of the installed purse", "bank card pays its own purse: loaded"),
        Step("settlement bank-a", "batch net = approvals of this run"),
    ]
    stack = LocalStack(say=_say)
    t0 = time.perf_counter()
    try:
        stack.start_all()
        asyncio.run(_run(stack, steps))
        stack.check_workers()
    except KeyboardInterrupt:
        _say("interrupted")
    except Exception as exc:  # noqa: BLE001 - shown, then everything is stopped
        console.print(f"[red]demo failed:[/red] {exc}")
    finally:
        stack.stop()
    table = Table(title=f"CardBus demo ({time.perf_counter() - t0:.0f}s)")
    for col in ("step", "expected", "outcome", "code", "ms", ""):
        table.add_column(col)
    for st in steps:
        table.add_row(st.name, st.expected, st.outcome, st.code,
                      f"{st.latency_ms:.0f}" if st.latency_ms is not None else "--",
                      "[green]ok[/green]" if st.ok else "[red]FAIL[/red]")
    Console().print(table)
    ok = all(st.ok for st in steps)
    print("demo: all steps behaved as expected" if ok else "demo: some steps did not behave "
          "as expected (logs in .cardbus/logs)")
    return 0 if ok else 1
