"""The real jPOS bank host, started once per test session (``console.commands.isohost``), with a small
in-process CardBus around the bank-iso bridge whose keys it shares."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardbus.paths import REPO_ROOT
from tests.agents.iso8583.bank import IsoBank

# where `make setup` (`cardbus iso-host fetch`) put the jPOS jars: read before any fixture
# points CARDBUS_HOME at a test folder
SHARED_LIBS = Path(os.environ.get("CARDBUS_HOME") or REPO_ROOT / ".cardbus") / "iso-host" / "libs"


@pytest.fixture(scope="session")
def iso_libs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test home shares the jPOS jars (a missing folder is fetched into once) and the
    host's classes (compiled once per session)."""
    os.environ.setdefault("CARDBUS_ISO_HOST_LIBS", str(SHARED_LIBS))
    os.environ.setdefault("CARDBUS_ISO_HOST_CLASSES", str(tmp_path_factory.mktemp("iso-classes")))


@pytest.fixture(scope="session")
def iso_bank(tmp_path_factory: pytest.TempPathFactory, iso_libs: None) -> Iterator[IsoBank]:
    """Keys for the platform, bank-iso and a terminal in a session home, and the jPOS host
    running on a free port with those keys."""
    from console.commands import isohost

    home = Path(tmp_path_factory.mktemp("iso-home"))
    bank = IsoBank(home)
    state, _ = isohost.start(home, port=isohost.free_port())
    bank.port = state.port
    try:
        yield bank
    finally:
        isohost.stop(home)
