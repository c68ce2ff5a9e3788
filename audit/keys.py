"""What the auditor verifies with: public identity keys, and (when given) the parties' key stores.

- Ed25519 seals: the platform's public key from the directory (``cardbus.vault.identity``),
  each provider's from its ``ProviderRegistered`` events, each terminal's from its
  ``TerminalEnrolled`` events. A seal must be made by a key of the event's own producer
  (``sign:<producer>.v<n>``): a provider cannot sign as the platform.
- Terminal MACs (HMAC) need the platform's key store (the audit HSM): the local vault plus the
  terminal key records of the platform's ``platform-keys`` changelog.
- Re-deriving provider decisions needs each provider's key store (``cardbus.ceremony``).

What is missing is reported as "not checked, because ...", never as a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.history import KeyHistory
from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import StoredKey, b64d
from cardbus.crypto.signing import MacSealer, Verifier
from cardbus.errors import CardBusError, CryptoError, MacInvalid, SignatureInvalid
from schemas.base import Event, Seal

UNSEALED_TYPES = frozenset({"ClockTicked", "EventDeadLettered", "TerminalStatusChanged",
                            "AuditFindingReported"})
"""Events that carry no seal by design (the platform's own clock, dead letters, operator
status changes, whose seal is optional, and the audit's own findings)."""


class NotCheckable(Exception):
    """The auditor lacks the key to check this seal (reported, not a failure)."""


@dataclass
class KeyBook:
    """Public keys by key id, and the optional platform HSM for terminal MACs."""

    ed25519: dict[str, bytes] = field(default_factory=dict)  # key id -> raw public key
    platform: PlatformHsm | None = None
    home: Path | None = None
    notes: list[str] = field(default_factory=list)
    _verifiers: dict[str, Verifier] = field(default_factory=dict, repr=False)
    _macs: dict[str, MacSealer] = field(default_factory=dict, repr=False)
    deferred: frozenset[str] = frozenset()  # topics whose platform requests the replay checks
    # producers whose outputs the replay re-derives with the registered signing key: an output
    # identical to its re-derivation carries a seal that verifies, so it is not verified twice
    deferred_producers: frozenset[str] = frozenset()
    history: KeyHistory = field(default_factory=KeyHistory)  # which key was valid when

    def learn(self, key_id: str, public_b64: str) -> None:
        """Add a public key (registration or enrollment)."""
        self.ed25519.setdefault(key_id, b64d(public_b64))

    def verifier(self, key_id: str) -> Verifier | None:
        v = self._verifiers.get(key_id)
        if v is None and key_id in self.ed25519:
            v = self._verifiers[key_id] = Verifier(key_id, self.ed25519[key_id])
        return v

    def check(self, event: Event, canonical: bytes) -> str:
        """Verify ``event``'s seal over ``canonical``: returns "ed25519", "hmac" or "none";
        raises ``CryptoError`` if it does not verify, ``NotCheckable`` if no key is at hand."""
        seal = event.seal
        if seal is None:
            if event.type in UNSEALED_TYPES:
                return "none"
            raise SignatureInvalid(f"{event.type} carries no seal")
        if seal.alg == "Ed25519":
            _own_key(seal, event.producer)
            verifier = self.verifier(seal.key_id)
            if verifier is None:
                if seal.key_id.startswith("sign:platform.") and not self._has_platform():
                    raise NotCheckable("platform seals: no platform identity (directory)")
                raise SignatureInvalid(f"unknown signing key {seal.key_id}")
            verifier.verify_seal(seal, canonical)
            return "ed25519"
        terminal_id = getattr(event, "terminal_id", None)
        if not event.producer.startswith("terminal:") or terminal_id is None:
            raise MacInvalid(f"{event.type} by {event.producer} may not carry a terminal MAC")
        if event.producer != f"terminal:{terminal_id}":
            raise MacInvalid(f"MAC of {event.producer} on terminal {terminal_id}'s event")
        if self.platform is None:
            raise NotCheckable("terminal MACs: no platform key store")
        if not seal.key_id.startswith(f"tmk:{terminal_id}.v"):
            raise MacInvalid(f"seal key {seal.key_id} is not terminal {terminal_id}'s MAC key")
        sealer = self._macs.get(seal.key_id)
        if sealer is None:
            key_name, _, version = seal.key_id.rpartition(".v")
            try:
                key = self.platform.keys.key(key_name, KeyUsage.MAC,
                                             owner=f"terminal:{terminal_id}",
                                             version=int(version))
            except (CardBusError, ValueError):
                raise NotCheckable("terminal MACs: key not in the platform key store") from None
            sealer = self._macs[seal.key_id] = MacSealer(seal.key_id, key)
        sealer.verify_seal(seal, canonical)
        return "hmac"

    def _has_platform(self) -> bool:
        return any(k.startswith("sign:platform.") for k in self.ed25519)


def _own_key(seal: Seal, producer: str) -> None:
    if not seal.key_id.startswith(f"sign:{producer}.v"):
        raise SignatureInvalid(f"seal key {seal.key_id} does not belong to {producer}")


def build_keybook(home: Path | None, key_changelog: list[bytes | None]) -> KeyBook:
    """The key book from the local directory and vault (``home``), what is there of it."""
    from cardbus import vault

    book = KeyBook(home=home)
    try:
        platform = vault.identity("platform", home)
        book.ed25519[platform.key_id] = platform.public_bytes()
    except CardBusError as exc:
        book.notes.append(f"platform seals not checked: {exc}")
    try:
        book.platform = PlatformHsm(vault.FileKeyStore("platform", home))
    except CardBusError as exc:
        book.notes.append(f"terminal MACs not checked: no platform key store ({exc})")
        return book
    records = []
    for value in key_changelog:
        if not value:
            continue
        try:
            records.append(StoredKey.model_validate(json.loads(value)))
        except (ValueError, TypeError):
            continue
    book.platform.keys.load_records(records)
    if key_changelog:
        book.notes.append(f"terminal key records from the platform-keys changelog: {len(records)}")
    return book


def mac_sealer(book: KeyBook, key_id: str) -> MacSealer | None:  # pragma: no cover - helper
    """A MAC sealer for ``key_id`` from the platform key store (tests forge with it)."""
    if book.platform is None:
        return None
    key_name, _, version = key_id.rpartition(".v")
    return MacSealer(key_id, book.platform.keys.key(key_name, KeyUsage.MAC, version=int(version)))


def learn_from(book: KeyBook, event: Event) -> None:
    """Learn the identity key a registration or an enrollment declares."""
    data: Any = event
    if event.type in ("ProviderRegistered", "TerminalEnrolled"):
        book.learn(data.identity_key_id, data.identity_public_key)


__all__ = [
    "UNSEALED_TYPES",
    "CryptoError",
    "KeyBook",
    "NotCheckable",
    "build_keybook",
    "learn_from",
]
