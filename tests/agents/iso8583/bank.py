"""A small CardBus in process around the bank-iso bridge, with its keys on disk (so the real
jPOS host started by ``console.commands.isohost`` gets the same keys): platform, bank-iso, one terminal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from agents.platform import decide as platform
from agents.providers.base import IssuedCard
from agents.providers.iso8583 import cardfile
from agents.providers.iso8583.adapter import adapter as bank_iso
from agents.providers.iso8583.hsm import BridgeHsm, bridge_hsm
from bench.sim import World
from cardbus import vault
from cardbus.crypto.keystore import KeyStore
from cards.profile import CardState
from schemas.payments import AuthorizationRequested

TERMINAL = "T-ISO-0001"


def now() -> datetime:
    return datetime.now(UTC)


class IsoBank:
    """The in-process world and the bridge's HSM, sharing one key home with the host."""

    def __init__(self, home: Path) -> None:
        self.home = home
        stores: list[vault.FileKeyStore] = []

        def keystore(party: str) -> KeyStore:
            vault.create(party, home)
            store = vault.FileKeyStore(party, home)
            stores.append(store)
            return store

        self.world = World.build([bank_iso], [TERMINAL], now(), keystores=keystore)
        for store in stores:
            store.save()
        self.hsm: BridgeHsm = bridge_hsm("bank-iso", home)
        self.atc: dict[str, int] = {}
        self.port = 0  # the host's, once started

    def issue(self, *, balance: int = 100_000, pin: str = "1234", expiry: str = "301231",
              **flags: object) -> IssuedCard:
        issued = self.world.issue("bank-iso", pin=pin, balance=balance, expiry=expiry)
        if flags:
            self.flags(issued, **flags)
        return issued

    def flags(self, issued: IssuedCard, **flags: object) -> None:
        cardfile.set_flags(cardfile.card_file_path(self.home), self.hsm.card_file_cipher,
                           issued.profile.pan, **flags)

    def request(self, issued: IssuedCard, amount: int, *, pin: str | None = "1234",
                when: datetime | None = None) -> AuthorizationRequested:
        """The platform's signed AuthorizationRequested for a tap of ``issued``."""
        cid = issued.profile.card_id
        self.atc[cid] = self.atc.get(cid, 0)
        state = CardState(None, atc=self.atc[cid])
        req = self.world.pay(TERMINAL, issued, amount=amount, when=when or now(), pin=pin,
                             state=state)
        self.atc[cid] = state["atc"]
        _, out = platform.request_payment(
            req, received_at=req.occurred_at, terminal=self.world.terminal_records[TERMINAL],
            routes=self.world.routes, hsm=self.world.platform)
        ((_, _, auth),) = out.events
        assert isinstance(auth, AuthorizationRequested)
        return auth


def with_pan(issued: IssuedCard, pan: str) -> IssuedCard:
    return replace(issued, profile=issued.profile.model_copy(update={"pan": pan}))
