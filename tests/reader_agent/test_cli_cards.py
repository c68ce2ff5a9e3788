"""``cardbus pay`` and ``cardbus reader`` as a user runs them, with cards that never stop.

Each command runs as its own process against the real broker and the real pcscd; the hostile
card sits in a vpcd reader. The terminal is enrolled in a temporary ``CARDBUS_HOME`` with keys
from a throwaway platform (the dialogue fails before anything reaches the bus, so no platform
worker is needed): the command must end with one line saying the card was not accepted and
why, and no traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cards.hostile import HostileApplet
from reader_agent.pcsc import Context, wait_present
from reader_agent.terminal import Terminal
from streams.admin import ensure_topics_sync
from streams.topics import TERMINAL_RESULTS

pytestmark = [pytest.mark.pcsc, pytest.mark.broker]

TERMINAL = "T-CLI"
REASONS = {
    "more_data": "select PPSE: card still announced more data (61xx) after 32 GET RESPONSE "
                 "commands",
    "wrong_length": "select PPSE: card still asked for another length (6Cxx) after 1 re-issue",
}


@pytest.fixture
def cli_env(tmp_path: Path, kafka_bootstrap: str, issuers: dict[str, ProviderHsm]
            ) -> Iterator[dict[str, str]]:
    """The environment of a machine with one enrolled terminal (keys installed)."""
    home = tmp_path / "home"
    terminal = Terminal.create(TERMINAL, home=home)
    for blob in PlatformHsm(memory_keystore()).enroll_terminal(TERMINAL,
                                                               terminal.hsm.public_kex()):
        terminal.hsm.install(blob)
    for provider in ("bank-a", "bank-b"):
        terminal.trust(provider, issuers[provider].card_ca_verifier)
    terminal.save()
    ensure_topics_sync(kafka_bootstrap, [TERMINAL_RESULTS])
    yield {**os.environ, "CARDBUS_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "PYTHONUNBUFFERED": "1"}


def _cardbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardbus.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("mode", sorted(REASONS))
async def test_pay_refuses_a_card_that_never_stops(pcscd, make_card, cli_env, mode) -> None:
    make_card("bank-a", pcscd[2], applet=HostileApplet(mode))
    await asyncio.to_thread(wait_present, Context(), pcscd[2].name)
    done = await asyncio.to_thread(_cardbus, cli_env, "pay", "--reader", "2", "--amount", "100",
                                   "--pin", "1234", "--terminal-id", TERMINAL)
    assert done.returncode != 0
    assert done.stdout.splitlines() == [f"no payment: card not accepted: {REASONS[mode]}"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("mode", sorted(REASONS))
async def test_reader_refuses_a_card_that_never_stops(pcscd, make_card, cli_env,
                                                      mode) -> None:
    make_card("bank-a", pcscd[2], applet=HostileApplet(mode))
    await asyncio.to_thread(wait_present, Context(), pcscd[2].name)
    done = await asyncio.to_thread(_cardbus, cli_env, "reader", "--once", "--amount", "100",
                                   "--pin", "1234", "--terminal-id", TERMINAL)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines == [f"[{pcscd[2].name}] card not accepted: {REASONS[mode]}"], done.stdout
    assert "Traceback" not in done.stdout + done.stderr
