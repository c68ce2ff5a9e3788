"""A small CardBus wired in process: platform, bank-a, bank-b, one terminal, real crypto."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.providers.bank_a import adapter as bank_a
from agents.providers.bank_b import adapter as bank_b
from bench.sim import World

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def world() -> World:
    return World.build([bank_a, bank_b], ["T-0001"], NOW)


@pytest.fixture
async def net() -> object:
    """Handler objects over dicts: the platform, bank-a joined, terminal T-0001 enrolled and
    active, nothing sent yet (``tests.agents.harness.Network``)."""
    from tests.agents.harness import Network  # the harness imports NOW from here

    network = Network(NOW)
    await network.join(bank_a)
    await network.enroll("T-0001")
    network.sent.take()
    return network
