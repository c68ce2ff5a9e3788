"""``cardbus pay`` and ``cardbus reader`` as a user runs them, with cards that never stop.

Each command runs as its own process against the real broker and the real pcscd; the hostile
card sits in a vpcd reader. The terminal is enrolled and activated on the running system
(``system`` fixture: the platform's key, the secured bus, the operator's activation), in the
system's state folder: the command must end with one line saying the card was not accepted and
why, and no traceback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cards.hostile import HostileApplet
from reader_agent.pcsc import Context, wait_present
from reader_agent.session import TerminalSession
from reader_agent.terminal import Terminal
from tests.integration.system import enroll_active

pytestmark = [pytest.mark.pcsc, pytest.mark.broker]

REASONS = {
    "more_data": "select PPSE: card still announced more data (61xx) after 32 GET RESPONSE "
                 "commands",
    "wrong_length": "select PPSE: card still asked for another length (6Cxx) after 1 re-issue",
}


@pytest.fixture
async def cli_env(system: Any) -> AsyncIterator[tuple[dict[str, str], str]]:
    """The environment of a machine with one enrolled, active terminal, and its id."""
    terminal = Terminal.create(f"C{uuid.uuid4().hex[:7].upper()}", home=system.home)
    async with TerminalSession(terminal, system.bootstrap) as session:
        await enroll_active(session)
    terminal.save()
    yield ({**system.env, "KAFKA_BOOTSTRAP_SERVERS": system.bootstrap,
            "PYTHONUNBUFFERED": "1"}, terminal.terminal_id)


def _cardbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], env=env,
                          input="1234\n", capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("mode", sorted(REASONS))
async def test_pay_refuses_a_card_that_never_stops(pcscd, make_card, cli_env, mode) -> None:
    make_card("bank-a", pcscd[2], applet=HostileApplet(mode))
    await asyncio.to_thread(wait_present, Context(), pcscd[2].name)
    env, terminal_id = cli_env
    done = await asyncio.to_thread(_cardbus, env, "pay", "--reader", "2", "--amount", "100",
                                   "--pin-stdin", "--terminal-id", terminal_id)
    assert done.returncode != 0
    assert done.stdout.splitlines() == [f"no payment: card not accepted: {REASONS[mode]}"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("mode", sorted(REASONS))
async def test_reader_refuses_a_card_that_never_stops(pcscd, make_card, cli_env,
                                                      mode) -> None:
    make_card("bank-a", pcscd[2], applet=HostileApplet(mode))
    await asyncio.to_thread(wait_present, Context(), pcscd[2].name)
    env, terminal_id = cli_env
    done = await asyncio.to_thread(_cardbus, env, "reader", "--once", "--amount", "100",
                                   "--pin-stdin", "--terminal-id", terminal_id)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines == [f"[{pcscd[2].name}] card not accepted: {REASONS[mode]}"], done.stdout
    assert "Traceback" not in done.stdout + done.stderr
