"""Reader fixtures: a real pcscd with vpcd readers (session), issuers and cards in tmp folders.

The pcscd fixture reuses a pcscd that already shows the CardBus virtual readers (for example
one started with ``cardbus pcscd start``); otherwise it starts one through
``reader_agent.pcscd.Pcscd`` in a temporary folder and stops it (by PID) at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reader_agent.cards import applet_for
from reader_agent.cards.profile import PROVIDERS, CardProfile, IssuerKeys, issue_card
from reader_agent.cards.vpcd import VirtualCard
from reader_agent.pcsc import Context, wait_present
from reader_agent.pcscd import Pcscd, VirtualReader, list_readers, virtual_readers

READERS = 4


@pytest.fixture(scope="session")
def pcscd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd | None]:
    """The pcscd this session started (None when one with our readers was already up)."""
    readers = virtual_readers(READERS)
    if {r.name for r in readers} <= set(list_readers()):
        yield None
        return
    try:
        Pcscd.check_installed()
    except Exception as exc:
        pytest.skip(str(exc))
    daemon = Pcscd(READERS, home=tmp_path_factory.mktemp("pcscd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def pcscd(pcscd_daemon: Pcscd | None) -> list[VirtualReader]:
    """The virtual readers of a running pcscd."""
    return virtual_readers(READERS)


@pytest.fixture
def issuers(tmp_path: Path) -> dict[str, IssuerKeys]:
    """Fresh issuing keys for every provider (generated per test, never committed)."""
    home = tmp_path / "issuers"
    home.mkdir()
    return {p: IssuerKeys.load_or_create(p, home) for p in PROVIDERS}


@pytest.fixture
def card_home(tmp_path: Path) -> Path:
    path = tmp_path / "cards"
    path.mkdir()
    return path


@pytest.fixture
def make_card(issuers: dict[str, IssuerKeys], card_home: Path
              ) -> Iterator[object]:
    """make_card(provider, reader, **kw) -> (profile, VirtualCard inserted in that reader)."""
    inserted: list[VirtualCard] = []

    def _make(provider: str, reader: VirtualReader, *, balance: int = 0,
              applet: object = None) -> tuple[CardProfile, VirtualCard]:
        profile = issue_card(provider, issuer=issuers[provider], balance=balance)
        card = VirtualCard(applet or applet_for(profile, card_home), reader.port)  # type: ignore[arg-type]
        card.insert()
        inserted.append(card)
        return profile, card

    yield _make
    ctx = Context()
    for card in inserted:
        card.remove()
    for card in inserted:  # pcscd notices a removal at its next poll (~400 ms)
        wait_present(ctx, next(r.name for r in virtual_readers(READERS) if r.port == card.port),
                     present=False)


def aids() -> dict[str, str]:
    return {s.aid: s.provider for s in PROVIDERS.values() if s.kind == "emv"}
