"""The terminal: its sealed key store (the patent's key storage module) and what it says on
the bus, without PC/SC and without Kafka.

A terminal is a party like the platform and each provider: its keys live in a ``TerminalHsm``
over the party's sealed key store (``cardbus.vault``: AES-256-GCM records under the terminal's
storage key, the "device key", from ``CARDBUS_STORAGE_KEY_TERMINAL_<ID>`` or a 0600 file).
``Terminal.create`` makes the identity and key-agreement keys; ``enrollment()`` is the event
that registers them; ``apply_keys()`` opens the platform's ``TerminalKeysIssued`` (checking the
platform's signature) into the key store. The PC/SC reader agent and the software terminals of
tests and benchmarks both use this class.

The platform's public identity key is mandatory: a terminal never enrols, installs keys or
takes a result without checking the platform's seal (the key wrap to the terminal is anonymous
ECDH, so anyone could send it keys; only the seal says they come from the platform). Without
the platform's key there is no terminal: ``create`` refuses with one clear line.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from cardbus import vault
from cardbus.crypto.hsm import TerminalHsm
from cardbus.crypto.keystore import KeyStore, b64d, b64e
from cardbus.crypto.signing import Verifier, verify_event
from cardbus.errors import ConfigError, MissingKeyError
from reader_agent.dialogue import EmvTap
from reader_agent.requests import Sale, tap_events
from schemas.base import Event, header
from schemas.cards import CardTapped
from schemas.payments import PaymentRequested
from schemas.terminals import ProviderCardAuthKey, TerminalEnrolled, TerminalKeysIssued
from schemas.values import Merchant

DEFAULT_MERCHANT = Merchant(merchant_id="M-0001", name="CardBus Demo Shop", mcc="5999")


class Terminal:
    """One terminal's key module and identity."""

    def __init__(self, hsm: TerminalHsm, merchant: Merchant, *, platform: Verifier,
                 store: vault.FileKeyStore | None = None) -> None:
        self.hsm = hsm
        self.terminal_id = hsm.terminal_id
        self.merchant = merchant
        self.platform = platform
        self.store = store
        self.card_auth: dict[str, Verifier] = {}  # provider id -> its card-auth key
        self.directory: dict[str, ProviderCardAuthKey] = {}  # provider id -> kind, AIDs, key
        self.status = "suspended"  # what the platform's last key set said

    # -- persistence ---------------------------------------------------------------------------

    @classmethod
    def create(cls, terminal_id: str, merchant: Merchant = DEFAULT_MERCHANT,
               home: Path | None = None) -> Terminal:
        """Make (or reopen) the terminal's sealed key store and identity."""
        party = f"terminal-{terminal_id}"
        platform = platform_identity(home)  # before anything is made: no key, no terminal
        vault.create(party, home)
        store = vault.FileKeyStore(party, home)
        term = cls(TerminalHsm(terminal_id, store), merchant, platform=platform, store=store)
        meta = vault.party_dir(party, home) / "terminal.json"
        if meta.exists():
            data = json.loads(meta.read_text())
            term.merchant = Merchant.model_validate(data["merchant"])
            for entry in data.get("providers", []):
                term.trust(ProviderCardAuthKey.model_validate(entry))
            term.status = data.get("status", "suspended")
        term.save()
        return term

    @classmethod
    def open(cls, terminal_id: str, home: Path | None = None) -> Terminal:
        """Reopen an enrolled terminal (a clear error if it was never created here)."""
        meta = vault.party_dir(f"terminal-{terminal_id}", home) / "terminal.json"
        if not meta.exists():
            raise ConfigError(f"terminal {terminal_id} is not enrolled here: run "
                              f"`cardbus terminal enroll --terminal-id {terminal_id}`")
        return cls.create(terminal_id, home=home)

    @classmethod
    def in_memory(cls, terminal_id: str, keystore: KeyStore,
                  merchant: Merchant = DEFAULT_MERCHANT, *, platform: Verifier) -> Terminal:
        """A terminal whose keys live only in memory (software terminals)."""
        return cls(TerminalHsm(terminal_id, keystore), merchant, platform=platform)

    def save(self) -> None:
        if self.store is None:
            return
        self.store.save()
        meta = self.store.path.parent / "terminal.json"
        meta.write_text(json.dumps({
            "terminal_id": self.terminal_id,
            "merchant": self.merchant.model_dump(mode="json"),
            "providers": [e.model_dump(mode="json") for _, e in sorted(self.directory.items())],
            "status": self.status,
        }, indent=1))

    def trust(self, entry: ProviderCardAuthKey) -> None:
        """Accept ``entry``'s provider: its cards' AIDs and its card-authentication key
        (normally from ``apply_keys``)."""
        verifier = Verifier(entry.key_id, b64d(entry.public_key))
        self.directory[entry.provider_id] = entry
        self.card_auth[entry.provider_id] = verifier
        self.hsm.trust_card_ca(verifier)

    def payment_aids(self) -> dict[str, str]:
        """AID -> provider id for the payment applications of every bank this terminal
        accepts (the AID list the platform's key provisioning gives it)."""
        return {aid: e.provider_id for e in self.directory.values() if e.kind == "bank"
                for aid in e.aids}

    def operator(self, provider_id: str) -> ProviderCardAuthKey:
        """The directory entry of transit operator ``provider_id`` (a clear error if the
        platform has provisioned no such operator to this terminal)."""
        entry = self.directory.get(provider_id)
        if entry is None or entry.kind != "transit" or not entry.aids:
            known = ", ".join(sorted(p for p, e in self.directory.items()
                                     if e.kind == "transit")) or "none"
            raise ConfigError(f"{provider_id} is not a transit operator this terminal knows "
                              f"(known: {known})")
        return entry

    # -- the bus side ----------------------------------------------------------------------------

    def enrollment(self, now: datetime) -> TerminalEnrolled:
        """The enrollment event, sealed with the terminal's identity key."""
        return enrollment(self.hsm, self.merchant, now)

    def apply_keys(self, ev: TerminalKeysIssued) -> None:
        """Install the keys the platform issued (its seal checked) and trust the providers'
        card-authentication keys it vouches for."""
        if ev.terminal_id != self.terminal_id:
            raise ConfigError(f"keys for {ev.terminal_id}, not {self.terminal_id}")
        self.check_platform(ev)
        for issued in ev.keys:
            self.hsm.install(issued.wrapped)
        for entry in ev.card_auth_keys:
            self.trust(entry)
        self.status = ev.status
        self.save()

    def check_platform(self, ev: Event) -> None:
        """``SignatureInvalid`` unless ``ev`` carries the platform's seal (its identity key; the
        platform re-seals what it forwards): an unsealed or foreign-sealed key set or result
        is never acted on."""
        verify_event(ev, {self.platform.key_id: self.platform}.get)

    @property
    def ready(self) -> bool:
        """Keys installed and at least one provider trusted."""
        try:
            for prefix in ("tpk", "tmk", "tpan"):
                self.hsm.keys.latest_version(f"{prefix}:{self.terminal_id}")
        except MissingKeyError:
            return False
        return bool(self.card_auth)

    def card_auth_public(self, provider: str) -> bytes:
        """The card-authentication public key of ``provider`` (the dialogue checks cards
        against it)."""
        verifier = self.card_auth.get(provider)
        if verifier is None:
            raise ConfigError(f"no card-authentication key for provider {provider}")
        return verifier.public_bytes()

    def events(self, tap: EmvTap, *, reader: str, atr: str, now: datetime,
               sale: Sale | None, payment_id: str | None = None
               ) -> tuple[CardTapped, PaymentRequested | None]:
        """The sealed events of one tap (see ``reader_agent.requests``)."""
        return tap_events(self.hsm, tap, reader=reader, atr=atr, now=now, sale=sale,
                          payment_id=payment_id)


def enrollment(terminal: TerminalHsm, merchant: Merchant, now: datetime) -> TerminalEnrolled:
    """A terminal's enrollment, sealed with its identity key (proof of possession)."""
    tid = terminal.terminal_id
    ev = TerminalEnrolled(
        **header(f"terminal:{tid}", tid, now), terminal_id=tid, merchant=merchant,
        identity_key_id=terminal.verifier.key_id,
        identity_public_key=b64e(terminal.verifier.public_bytes()),
        wrap_key_id=f"kex:{tid}", wrap_public_key=b64e(terminal.public_kex()))
    return terminal.sign_event(ev)


def platform_identity(home: Path | None = None) -> Verifier:
    """The platform's public identity key from the parties' directory; ``ConfigError`` (one
    line) if it is not there: a terminal that cannot check the platform's seal does not run."""
    try:
        return vault.identity("platform", home)
    except MissingKeyError:
        raise ConfigError("no platform public key in the parties' directory: a terminal "
                          "cannot check what the platform sends without it; run `cardbus "
                          "setup` or install the platform's directory.json") from None
