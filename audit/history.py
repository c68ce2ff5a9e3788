"""Which key was valid when: the key history (``key-history`` topic, never compacted).

A key is registered by the first record of the history that declares it (a provider's
``ProviderRegistered``, a terminal's ``TerminalEnrolled``: their identity keys; the platform's
``TerminalKeysIssued``: the terminal's MAC keys) and revoked by a ``KeyRevoked`` sealed by the
platform (the operator) or by the key's own owner. Times are the records' broker timestamps
(``LogAppendTime``), the same clock every audited record carries. A seal made before its key's
registration or at/after its revocation is a finding at that record. The registrations on the
compacted topics are not used for time: a provider re-publishes its registration at every start.
Pure: no Kafka, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.base import Event

REGISTRATIONS = frozenset({"ProviderRegistered", "TerminalEnrolled"})
"""Events that register their own identity key (proof of possession): the registration itself is
never "before its registration"."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """A key revoked from ``at_ms`` on, by ``by``, where."""

    at_ms: int
    by: str
    where: str
    reason: str


@dataclass
class KeyHistory:
    """Registration and revocation times by key id (epoch ms)."""

    registered: dict[str, int] = field(default_factory=dict)
    revoked: dict[str, Revocation] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.registered or self.revoked)

    def register(self, key_id: str, at_ms: int) -> None:
        """The key exists from ``at_ms`` (the earliest record that declares it wins)."""
        known = self.registered.get(key_id)
        if known is None or at_ms < known:
            self.registered[key_id] = at_ms

    def learn(self, event: Event, at_ms: int) -> None:
        """Learn the keys a key-history record registers (revocations: ``revoke``)."""
        e: Any = event
        if event.type in REGISTRATIONS:
            self.register(e.identity_key_id, at_ms)
        elif event.type == "TerminalKeysIssued":
            for key in e.keys:
                self.register(key.key_id, at_ms)

    def revoke(self, event: Event, at_ms: int, where: str) -> None:
        """A verified ``KeyRevoked``: effective from its ``revoked_at`` (never later than the
        record itself: a revocation cannot be dated into the future to let a key seal on)."""
        e: Any = event
        if not may_revoke(event.producer, e.key_id):
            return  # the scan reports it at its record
        effective = min(int(e.revoked_at.timestamp() * 1000), at_ms)
        known = self.revoked.get(e.key_id)
        if known is None or effective < known.at_ms:
            self.revoked[e.key_id] = Revocation(effective, event.producer, where, e.reason)

    def problem(self, key_id: str, at_ms: int, event_type: str) -> str | None:
        """Why a seal by ``key_id`` on a record stamped ``at_ms`` is out of its key's time, or
        None (in time, or the history says nothing about the key)."""
        gone = self.revoked.get(key_id)
        if gone is not None and at_ms >= gone.at_ms:
            return (f"sealed with {key_id} at {at_ms}, after its revocation at {gone.at_ms} "
                    f"({gone.where}, by {gone.by}: {gone.reason})")
        born = self.registered.get(key_id)
        if born is not None and at_ms < born and event_type not in REGISTRATIONS:
            return f"sealed with {key_id} at {at_ms}, before its registration at {born}"
        return None


def may_revoke(producer: str, key_id: str) -> bool:
    """The platform (the operator's key) revokes any key; a party only its own signing keys."""
    return producer == "platform" or key_id.startswith(f"sign:{producer}.v")


__all__ = ["REGISTRATIONS", "KeyHistory", "Revocation", "may_revoke"]
