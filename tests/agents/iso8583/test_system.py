"""One payment through the whole system with a card of the ISO 8583 bank: terminal -> platform
-> bank-iso bridge (its own worker process) -> the jPOS host -> back, on the real broker; the
card checks the host's ARPC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cardbus.response_codes import APPROVED, INSUFFICIENT_FUNDS
from tests.integration import conftest as integration
from tests.integration.system import System, Till

pytestmark = [pytest.mark.broker, pytest.mark.isohost, pytest.mark.slow]

till = integration.till  # the enrolled software terminal of the integration tests


@pytest.fixture
def iso_host(system: System, iso_libs: None) -> Iterator[int]:
    """The jPOS host with the system's bank-iso keys (the worker finds it by its host.json)."""
    from console.commands import isohost

    state, _ = isohost.start(system.home, port=isohost.free_port())
    try:
        yield state.port
    finally:
        isohost.stop(system.home)


async def test_payment_through_the_jpos_host(system: System, till: Till,
                                             iso_host: int) -> None:
    system.start_provider("bank-iso")
    try:
        await system.ready("bank-iso")
        await till.learn("bank-iso")
        card = await system.issue("bank-iso", balance=20_000)
        done, tap, link = await till.pay(card, 1_500, timeout=60)
        assert done.response_code == APPROVED and done.provider_id == "bank-iso", system.logs()
        assert Till.card_accepts(done, tap, link)  # the jPOS host's ARPC, checked by the card
        declined, _, _ = await till.pay(card, 50_000, timeout=60)
        assert declined.response_code == INSUFFICIENT_FUNDS
        log = (system.home / "iso-host" / "host.log").read_text()
        assert "amount=1500 code=00" in log and "amount=50000 code=51" in log
    finally:
        system.workers["bank-iso"].stop()
