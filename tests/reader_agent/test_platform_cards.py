"""Card management and lost cards end to end: real pcscd with a vpcd card process, the real
broker, the platform, bank-a and transit workers (``system`` fixture), the ``cardbus`` CLI.

- ``cardbus cards install --app transit`` puts a transit purse onto a bank-a card through the
  platform (its SCP03 channel relayed by the terminal, the purse prepared by the operator),
  ``cardbus cards apps`` lists it, and ``cardbus topup`` loads the new purse on the bank card;
- ``cardbus cards block --lost``: the card is declined 41 and its answer's APPLICATION BLOCK
  (a tampered copy first: the card refuses it, '6988') blocks it; the next tap finds it
  blocked ('6283'); ``cardbus cards unblock``: the next tap unblocks it, the one after pays.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cardbus.crypto.keystore import b64d, b64e
from cardbus.readers import VirtualReader, reader_for
from cards.profile import save_profile
from reader_agent.agent import ReaderAgent, scripted_pins
from reader_agent.pcsc import Context, wait_present
from reader_agent.runner import pay_on_reader, payment_line
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from schemas.payments import PaymentCompleted
from tests.integration.system import REPO, enroll_active
from tests.reader_agent.test_platform import _log_says, _ready

pytestmark = [pytest.mark.pcsc, pytest.mark.broker, pytest.mark.slow]

READER = 2


def _cli(system: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], cwd=REPO,
                          env=system.env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
async def terminal(system: Any) -> AsyncIterator[TerminalSession]:
    for provider in ("bank-a", "transit"):
        await _ready(system, provider)
    await _log_says(system, "platform", "card policy", "bank-a")
    term = Terminal.create(f"G{uuid.uuid4().hex[:7].upper()}", home=system.home)
    session = await TerminalSession(term, system.bootstrap).start()
    try:
        await enroll_active(session, providers=2, timeout=90)
        yield session
    finally:
        await session.stop()


@pytest.fixture
async def bank_card(system: Any, pcscd: list[VirtualReader]) -> AsyncIterator[Any]:
    """A bank-a card served by its own process (``cardbus cards insert``) in reader
    ``READER``."""
    issued = await system.issue("bank-a", balance=60_000)
    save_profile(issued.profile)
    card_id = issued.profile.card_id
    inserted = await asyncio.to_thread(_cli, system, "cards", "insert", card_id, "--reader",
                                       str(READER))
    assert inserted.returncode == 0, inserted.stderr
    await asyncio.to_thread(wait_present, Context(), pcscd[READER].name)
    try:
        yield issued
    finally:
        await asyncio.to_thread(_cli, system, "cards", "remove", "--reader", str(READER))
        await asyncio.to_thread(wait_present, Context(), pcscd[READER].name, 5.0, False)


async def test_install_transit_on_a_bank_card_list_it_and_top_it_up(
        system: Any, terminal: TerminalSession, bank_card: Any) -> None:
    tid, card_id = terminal.terminal.terminal_id, bank_card.profile.card_id
    common = ("--reader", str(READER), "--terminal-id", tid)
    done = await asyncio.to_thread(_cli, system, "cards", "install", "--app", "transit",
                                   "--card", card_id, *common)
    assert done.returncode == 0, done.stdout + done.stderr + system.logs()
    assert "installed A000000632010105 on" in done.stdout
    listed = await asyncio.to_thread(_cli, system, "cards", "apps", card_id, *common)
    assert listed.returncode == 0, listed.stderr
    assert "A000000632010105" in listed.stdout and "PERSONALIZED" in listed.stdout
    # the platform's own policy check: bank-a's payment application may not be touched
    lock = await asyncio.to_thread(_cli, system, "cards", "lock", card_id, "--aid",
                                   bank_card.profile.aid, *common)
    assert lock.returncode == 3 and "does not allow" in lock.stdout, lock.stdout + lock.stderr
    # the new purse on the bank card is loaded, paid by the bank card itself
    top = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "console.cli", "topup", "--amount", "1500",
                         "--bank-reader", str(READER), "--transit-reader", str(READER),
                         "--terminal-id", tid, "--pin-stdin"],
        cwd=REPO, env=system.env, input="1234\n", capture_output=True, text=True,
        timeout=120, check=False)
    assert top.returncode == 0, top.stdout + top.stderr + system.logs()
    assert "top-up loaded (payment 00), balance 1500" in top.stdout


async def test_a_lost_card_is_declined_41_blocked_on_the_card_then_unblocked(
        system: Any, terminal: TerminalSession, bank_card: Any) -> None:
    card_id = bank_card.profile.card_id
    blocked = await asyncio.to_thread(_cli, system, "cards", "block", "--lost", card_id)
    assert blocked.returncode == 0 and "reported lost" in blocked.stdout, blocked.stderr

    # the tap after the report: 41, and the answer's APPLICATION BLOCK; a tampered copy first
    agent = ReaderAgent(terminal.terminal, terminal, aids=terminal.terminal.payment_aids(),
                        pin_source=scripted_pins("1234"))
    agent.arm(2_000, "CNY")
    out = await agent.handle_card(reader_for(READER).name, b"")
    assert out.answer is not None, out.error
    done = await asyncio.wait_for(out.answer, 60)
    assert isinstance(done, PaymentCompleted) and done.response_code == "41", system.logs()
    assert done.issuer_script is not None and done.issuer_script.kind == "block"
    genuine = done.issuer_script
    command = b64d(genuine.command)
    tampered = done.model_copy(update={"issuer_script": genuine.model_copy(update={
        "command": b64e(command[:-1] + bytes([command[-1] ^ 0x01]))})})
    said = await _script_only(agent, tampered)
    assert "issuer script BLOCK refused by the card (6988)" in said
    said = await agent.complete(done)
    assert said == ("card closed the payment (AAC), issuer authenticated; issuer script BLOCK "
                    "applied (9000)")

    # its next tap: blocked on the card ('6283'), the zero-amount check declined 41 again
    answer, says = await pay_on_reader(terminal, READER, 1_000, pin="1234", timeout=60)
    assert answer is not None and answer.response_code == "41" and answer.amount.amount == 0
    assert says.startswith("card blocked (AAC)"), says
    assert "DECLINED: card blocked" in payment_line(answer, 1_000, "CNY", says)

    unblocked = await asyncio.to_thread(_cli, system, "cards", "unblock", card_id)
    assert unblocked.returncode == 0, unblocked.stderr
    answer, says = await pay_on_reader(terminal, READER, 1_000, pin="1234", timeout=60)
    assert answer is not None and answer.amount.amount == 0, says
    assert says == "card blocked (AAC); issuer script UNBLOCK applied (9000)"
    answer, says = await pay_on_reader(terminal, READER, 1_000, pin="1234", timeout=60)
    assert answer is not None and answer.approved and answer.amount.amount == 1_000, says
    assert says == "approved, card accepted (TC)" and answer.issuer_script is None
    # the issuer learnt the card applied its UNBLOCK (forwarded by the platform)
    await _log_says(system, "bank-a", "card status", "IssuerScriptReported", '"changed": true')


async def _script_only(agent: ReaderAgent, done: PaymentCompleted) -> str:
    """Only the script step of ``agent.complete``, the card's connection kept (a tampered
    script first, the genuine answer after it)."""
    link, tap, request_id = agent.open_links[done.correlation_id]
    return await agent._script(link, tap, request_id, done)
