"""Reader fixtures: a real pcscd with vpcd readers (session), issuers and cards in tmp folders.

The pcscd fixture reuses a pcscd that already shows the CardBus virtual readers (for example
one started with ``cardbus pcscd start``); otherwise it starts one through
``reader_agent.pcscd.Pcscd`` in a temporary folder and stops it (by PID) at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.providers.base import ProviderAdapter, adapter_for, discover
from cardbus.cardprofile import CardProfile
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import memory_keystore
from cardbus.crypto.pan import PanCipher
from cardbus.readers import VirtualReader, virtual_readers
from cards import applet_for
from cards.vpcd import VirtualCard
from reader_agent.pcsc import Context, wait_present
from reader_agent.pcscd import Pcscd, list_readers
from schemas.base import EncryptedBlob

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
    except Exception as exc:  # noqa: BLE001 - any failure: no readers
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


PROVIDERS = ("bank-a", "bank-b", "transit")


@pytest.fixture
def issuers() -> dict[str, ProviderHsm]:
    """Fresh provider HSMs (keys generated per test in memory, never committed)."""
    return {p: ProviderHsm(p, memory_keystore()) for p in PROVIDERS}


def issue(provider: str, hsm: ProviderHsm, *, balance: int = 0, pin: str = "1234"
          ) -> CardProfile:
    """A card profile issued through the provider's adapter."""
    adapter: ProviderAdapter = adapter_for(provider)
    if adapter.kind == "transit":
        return adapter.issue_transit_card(hsm, balance=balance)  # type: ignore[attr-defined,no-any-return]
    return adapter.issue_card(hsm, pin=pin, opening_balance=balance).profile


def card_auth_public(hsm: ProviderHsm) -> bytes:
    return hsm.card_ca_verifier.public_bytes()


def imk(hsm: ProviderHsm) -> bytes:
    """The provider's EMV issuer master key, out of its test key store (to recompute ARQCs)."""
    return hsm.keys.key(f"imk:{hsm.provider_id}", KeyUsage.EMV_IMK_AC)


@pytest.fixture
def card_home(tmp_path: Path) -> Path:
    path = tmp_path / "cards"
    path.mkdir()
    return path


@pytest.fixture
def make_card(issuers: dict[str, ProviderHsm], card_home: Path
              ) -> Iterator[object]:
    """make_card(provider, reader, **kw) -> (profile, VirtualCard inserted in that reader)."""
    inserted: list[VirtualCard] = []

    def _make(provider: str, reader: VirtualReader, *, balance: int = 0,
              applet: object = None) -> tuple[CardProfile, VirtualCard]:
        profile = issue(provider, issuers[provider], balance=balance)
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


def pan_blob(hsm: ProviderHsm, pan: str, context: str) -> EncryptedBlob:
    """A PAN as its issuer receives it (under the issuer's PAN key), e.g. to ask the issuer's
    HSM for an issuer script."""
    key_id = f"pan:{hsm.provider_id}"
    vid = f"{key_id}.v{hsm.keys.latest_version(key_id)}"
    return PanCipher(vid, hsm.keys.key(key_id, KeyUsage.PAN_ENC)).encrypt(pan, context)


def aids() -> dict[str, str]:
    return {a.aid: p for p, a in discover().items() if a.kind == "bank"}
