"""Terminal events: enrollment, status, and the keys the platform issues to a terminal.

Topics: ``cardbus.terminals`` (enrollment), ``cardbus.terminal-status`` and
``cardbus.terminal-keys``, all compacted and keyed by terminal id.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import B64, EncryptedBlob, Event, ProviderId, TerminalId
from schemas.upcast import Raw, upcaster
from schemas.values import Aid, Kcv, KeyId, Merchant, Text


class TerminalEnrolled(Event):
    """A terminal made its key pairs and registered its public keys."""

    SEALED_BY: ClassVar[str] = "terminal identity key (proof of possession)"

    type: Literal["TerminalEnrolled"] = "TerminalEnrolled"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    merchant: Merchant
    identity_key_id: KeyId
    identity_public_key: B64 = Field(description="Ed25519 public key, raw, base64url")
    wrap_key_id: KeyId
    wrap_public_key: B64 = Field(description="X25519 public key, raw, base64url (key wraps)")
    reader_model: Text | None = None


class TerminalStatusChanged(Event):
    """The platform (or an operator) activated or suspended a terminal."""

    SEALED_BY: ClassVar[str] = ""

    type: Literal["TerminalStatusChanged"] = "TerminalStatusChanged"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    status: Literal["active", "suspended"]
    reason: Text


class IssuedKey(BaseModel):
    """One terminal key, wrapped to the terminal's X25519 key (ECDH + HKDF + AES-GCM)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: KeyId
    usage: Literal["mac", "pin_enc", "pan_enc"]
    kcv: Kcv
    wrapped: EncryptedBlob


class ProviderCardAuthKey(BaseModel):
    """A provider the terminal accepts cards of: its kind, the application AIDs its cards carry
    (the terminal's AID list, as a terminal management system gives it) and the public key the
    terminal checks card certificates against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_id: ProviderId
    kind: Literal["bank", "transit"] = "bank"
    aids: tuple[Aid, ...] = ()
    key_id: KeyId
    public_key: B64


class TerminalKeysIssued(Event):
    """The platform's current key set for one terminal (the whole set: compaction keeps one)."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["TerminalKeysIssued"] = "TerminalKeysIssued"
    schema_version: Literal[3] = 3

    terminal_id: TerminalId
    keys: tuple[IssuedKey, ...] = Field(min_length=1)
    card_auth_keys: tuple[ProviderCardAuthKey, ...] = ()
    status: Literal["active", "suspended"] = Field(
        description="whether the platform takes this terminal's payments (v3): a new terminal "
                    "is suspended until an operator activates it")


@upcaster("TerminalKeysIssued", 1)
def _terminal_keys_issued_v1_to_v2(raw: Raw) -> Raw:
    """v1 named no provider kinds or AIDs: every provider was a bank with no AID known."""
    for entry in raw.get("card_auth_keys") or []:
        if isinstance(entry, dict):
            entry.setdefault("kind", "bank")
            entry.setdefault("aids", [])
    raw["schema_version"] = 2
    return raw


@upcaster("TerminalKeysIssued", 2)
def _terminal_keys_issued_v2_to_v3(raw: Raw) -> Raw:
    """v2 said nothing of the terminal's status: terminals were active from enrollment."""
    raw["status"] = "active"
    raw["schema_version"] = 3
    return raw
