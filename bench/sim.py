"""Parties without a bus: the platform, providers and terminals wired by direct calls.

What a key ceremony and an enrollment do over Kafka, done in process: used by unit tests of the
pure decision functions, by the load generator (software cards, no PC/SC) and by `cardbus
setup`. Nothing here imports Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from agents.platform import decide as platform
from agents.platform.decide import Route, TerminalRecord
from agents.providers.announce import key_provisioning, registration
from agents.providers.base import IssuedCard, ProviderAdapter
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, new_key
from cardbus.crypto.keystore import KeyStore, b64e, memory_keystore
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, EmvTap, run_payment
from reader_agent.terminal import enrollment
from schemas.base import Money
from schemas.payments import PaymentRequested
from schemas.terminals import ProviderCardAuthKey
from schemas.values import Merchant

KeyStoreFactory = Callable[[str], KeyStore]


def directory_entry(adapter: ProviderAdapter, hsm: ProviderHsm) -> ProviderCardAuthKey:
    """The platform's directory entry for a provider, as a terminal's key set carries it."""
    return ProviderCardAuthKey(
        provider_id=adapter.provider_id, kind=adapter.kind,
        aids=(adapter.aid,) if adapter.kind == "bank" else adapter.transit_aids,
        key_id=hsm.card_ca_verifier.key_id, public_key=b64e(hsm.card_ca_verifier.public_bytes()))


def kbpk_ceremony(platform_hsm: PlatformHsm, provider: ProviderHsm) -> None:
    """Share a fresh KBPK between the platform and a provider (out of band in real life)."""
    kbpk = new_key(KeyAlg.AES, 32)
    platform_hsm.import_provider_kbpk(provider.provider_id, kbpk)
    provider.import_kbpk(kbpk)


@dataclass
class World:
    """Every party of a small CardBus, wired in process."""

    platform: PlatformHsm
    providers: dict[str, ProviderHsm] = field(default_factory=dict)
    adapters: dict[str, ProviderAdapter] = field(default_factory=dict)
    terminals: dict[str, TerminalHsm] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    terminal_records: dict[str, TerminalRecord] = field(default_factory=dict)

    @classmethod
    def build(cls, adapters: list[ProviderAdapter], terminal_ids: list[str], now: datetime,
              keystores: KeyStoreFactory = memory_keystore) -> World:
        world = cls(PlatformHsm(keystores("platform")))
        for adapter in adapters:
            world.add_provider(adapter, now, keystores)
        for tid in terminal_ids:
            world.add_terminal(tid, now, keystores)
        return world

    def add_provider(self, adapter: ProviderAdapter, now: datetime,
                     keystores: KeyStoreFactory = memory_keystore) -> ProviderHsm:
        hsm = ProviderHsm(adapter.provider_id, keystores(f"provider-{adapter.provider_id}"))
        kbpk_ceremony(self.platform, hsm)
        pid = adapter.provider_id
        self.providers[pid], self.adapters[pid] = hsm, adapter
        route = platform.register_provider(registration(adapter, hsm, now), self.routes.get(pid))
        self.routes[pid] = platform.provision_keys(key_provisioning(hsm, now), route,
                                                   self.platform)
        for terminal in self.terminals.values():
            terminal.trust_card_ca(hsm.card_ca_verifier)
        return hsm

    def add_terminal(self, terminal_id: str, now: datetime,
                     keystores: KeyStoreFactory = memory_keystore) -> TerminalHsm:
        terminal = TerminalHsm(terminal_id, keystores(f"terminal-{terminal_id}"))
        merchant = Merchant(merchant_id="M-0001", name="CardBus Demo Shop", mcc="5999")
        record, keys = platform.enroll_terminal(enrollment(terminal, merchant, now),
                                                None, self.platform, self.routes)
        for issued in keys.keys:
            terminal.install(issued.wrapped)
        for hsm in self.providers.values():
            terminal.trust_card_ca(hsm.card_ca_verifier)
        self.terminals[terminal_id] = terminal
        self.terminal_records[terminal_id] = record
        return terminal

    def issue(self, provider_id: str, *, pin: str = "1234", balance: int = 100_000,
              expiry: str = "301231") -> IssuedCard:
        return self.adapters[provider_id].issue_card(self.providers[provider_id], pin=pin,
                                                     opening_balance=balance, expiry=expiry)

    def aids(self) -> dict[str, str]:
        return {a.aid: pid for pid, a in self.adapters.items() if a.kind == "bank"}

    def tap(self, card: IssuedCard, *, amount: int, when: datetime,
            state: CardState | None = None) -> EmvTap:
        """Run the card dialogue against the card's applet in process (no PC/SC)."""
        applet = applet_for(card.profile, state=state or CardState(None, atc=0))
        return run_payment(AppletLink(applet), self.aids(),
                           Checkout(amount=amount, when=when),
                           lambda pid: self.providers[pid].card_ca_verifier.public_bytes())

    def pay(self, terminal_id: str, card: IssuedCard, *, amount: int, when: datetime,
            pin: str | None = "1234", state: CardState | None = None,
            currency: str = "CNY", purpose: str = "purchase") -> PaymentRequested:
        """A MAC-sealed payment request as the reader agent would publish it."""
        from reader_agent.requests import Sale, tap_events

        tap = self.tap(card, amount=amount, when=when, state=state)
        terminal = self.terminals[terminal_id]
        merchant = Merchant(merchant_id="M-0001", name="CardBus Demo Shop", mcc="5999")
        _, req = tap_events(terminal, tap, reader="in-process", atr="3B8080018080", now=when,
                            sale=Sale(Money(amount=amount, currency=currency), merchant, pin,
                                      purpose))
        assert req is not None
        return req
