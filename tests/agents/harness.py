"""The platform's and the providers' handlers driven without a broker: dict tables, a list for
what they send, records made from encoded events. What a message does on the bus, each hop is
one handler call here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.platform.handlers import Platform, PlatformTables
from agents.platform.tablekeys import TableKeyStore
from agents.providers.announce import admission_for, key_provisioning, registration
from agents.providers.base import IssuedCard, ProviderAdapter, card_issued_event
from agents.providers.handlers import Provider, ProviderTables
from agents.providers.issuer import HsmIssuer
from bench.sim import kbpk_ceremony
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, new_key
from cardbus.crypto.keystore import StorageKeyring, memory_keystore
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, run_payment
from reader_agent.requests import Sale, tap_events
from reader_agent.terminal import enrollment
from schemas.base import Event, Money, header
from schemas.clock import ClockTicked
from schemas.payments import PaymentRequested
from schemas.terminals import TerminalKeysIssued, TerminalStatusChanged
from schemas.values import Merchant
from streams import codec
from streams.topics import TERMINAL_KEYS, provider_requests_topic

MERCHANT = Merchant(merchant_id="M-0001", name="Handler Test Shop", mcc="5999")


@dataclass(frozen=True)
class Rec:
    """A consumed record as the handlers see it."""

    value: bytes
    partition: int = 0
    timestamp: float = 0.0


@dataclass
class Sent:
    """Everything the handlers sent: (topic, key, event)."""

    items: list[tuple[str, str | None, Event]] = field(default_factory=list)

    async def __call__(self, topic: str, key: str | None, event: Event) -> None:
        self.items.append((topic, key, event))

    def take(self) -> list[tuple[str, str | None, Event]]:
        out, self.items = self.items, []
        return out

    def on(self, topic: str) -> list[Event]:
        return [ev for t, _k, ev in self.items if t == topic]


def rec(event: Event, *, topic: str | None = None, at: datetime | None = None,
        partition: int = 0) -> Rec:
    """The record carrying ``event`` (broker time ``at``, default the event's own time)."""
    when = at or event.occurred_at
    return Rec(codec.encode(event, topic=topic), partition, when.timestamp())


class Network:
    """A platform, some providers and terminals, all handler objects over dicts."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.sent = Sent()
        self.platform_tables = PlatformTables()
        self.keystore = TableKeyStore(StorageKeyring({1: new_key(KeyAlg.AES, 32)}), [],
                                      self.platform_tables.keys)
        self.platform_hsm = PlatformHsm(self.keystore)
        self.platform = Platform(self.platform_tables, self.platform_hsm, self.keystore,
                                 self.sent)
        self.providers: dict[str, Provider] = {}
        self.terminals: dict[str, TerminalHsm] = {}

    async def join(self, adapter: ProviderAdapter) -> Provider:
        """A provider's KBPK ceremony, registration and keys, through the platform's handlers."""
        hsm = ProviderHsm(adapter.provider_id, memory_keystore())
        kbpk_ceremony(self.platform_hsm, hsm)
        provider = Provider(adapter, ProviderTables(), hsm,
                            HsmIssuer(hsm, self.platform_hsm.verifier), self.sent)
        self.providers[adapter.provider_id] = provider
        admitted = self.platform_hsm.sign_event(admission_for(adapter, hsm.verifier, self.now))
        await self.platform.on_admission(rec(admitted))
        await self.platform.on_provider(rec(registration(adapter, hsm, self.now)))
        await self.platform.on_provider_keys(rec(key_provisioning(hsm, self.now)))
        return provider

    async def enroll(self, terminal_id: str, *, activate: bool = True) -> TerminalKeysIssued:
        """A terminal's enrollment (then the operator's activation); it installs the key set
        the platform sends back."""
        terminal = TerminalHsm(terminal_id, memory_keystore())
        await self.platform.on_enrollment(rec(enrollment(terminal, MERCHANT, self.now)))
        if activate:
            await self.platform.on_status(rec(self.status(terminal_id, "active")))
        keys = [ev for ev in self.sent.on(TERMINAL_KEYS.name)
                if isinstance(ev, TerminalKeysIssued) and ev.terminal_id == terminal_id][-1]
        for issued in keys.keys:
            terminal.install(issued.wrapped)
        self.terminals[terminal_id] = terminal
        return keys

    async def issue(self, provider_id: str, balance: int = 100_000) -> IssuedCard:
        """A new card, opened in its provider's ledger through the provider's handler."""
        provider = self.providers[provider_id]
        card = provider.adapter.issue_card(provider.hsm, pin="1234", opening_balance=balance)
        opened = card_issued_event(card, provider.hsm, self.now)
        await provider.on_request(rec(opened, topic=provider_requests_topic(provider_id)))
        return card

    def request(self, terminal_id: str, card: IssuedCard, amount: int, *,
                pin: str | None = "1234", state: CardState | None = None,
                purpose: str = "purchase") -> PaymentRequested:
        """The terminal's sealed request after a real card dialogue with the card's applet."""
        terminal = self.terminals[terminal_id]
        provider = self.providers[card.profile.provider]
        terminal.trust_card_ca(provider.hsm.card_ca_verifier)
        applet = applet_for(card.profile, state=state or CardState(None, atc=0))
        tap = run_payment(AppletLink(applet), {provider.adapter.aid: provider.pid},
                          Checkout(amount=amount, when=self.now),
                          lambda _pid: provider.hsm.card_ca_verifier.public_bytes())
        _, req = tap_events(terminal, tap, reader="in-process", atr="3B00", now=self.now,
                            sale=Sale(Money(amount=amount, currency="CNY"), MERCHANT, pin,
                                      purpose))
        assert req is not None
        return req

    def status(self, terminal_id: str, status: str) -> TerminalStatusChanged:
        """The operator's signed status change of a terminal."""
        return self.platform_hsm.sign_event(TerminalStatusChanged(
            **header("platform", terminal_id, self.now), terminal_id=terminal_id,
            status=status, reason="operator"))  # type: ignore[arg-type]

    def tick(self, partition: int, at: datetime) -> ClockTicked:
        """The platform's sealed clock tick for ``partition`` at ``at``."""
        return self.platform_hsm.sign_event(ClockTicked(
            **header("platform", f"clock-{partition}", at), partition=partition))

    async def deliver(self, items: list[tuple[str, str | None, Event]]) -> None:
        """Hand events the platform sent to providers to those providers' handlers."""
        for topic, _key, ev in items:
            for provider in self.providers.values():
                if topic == provider.topic:
                    await provider.on_request(rec(ev, topic=topic))


def only(items: list[Any], kind: type) -> Any:
    """The one item of type ``kind`` (a clear failure otherwise)."""
    found = [i for i in items if isinstance(i, kind)]
    assert len(found) == 1, f"expected one {kind.__name__}, got {found!r}"
    return found[0]
