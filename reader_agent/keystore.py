"""The terminal key store (the patent's key storage module): one sealed file.

The file holds the terminal's identity (Ed25519) and key-wrap (X25519) private keys, the MAC
and PIN keys the platform issued, and the providers' card-authentication public keys. It is
AES-256-GCM under a device key (``$CARDBUS_DEVICE_KEY`` hex, or ``device.key`` beside the
store, mode 0600), the terminal id bound as associated data. Keys never leave it in clear
except into this process's memory.

``enroll`` makes the key pairs and the ``TerminalEnrolled`` event; ``apply_keys_issued``
opens a ``TerminalKeysIssued`` event's wrapped keys and stores them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv
from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.signing import MacSealer, Signer, Verifier
from cardbus.crypto.wrap import unwrap_for_terminal
from cardbus.errors import ConfigError, MissingKeyError, UnwrapError
from cardbus.paths import sub_dir
from schemas.base import new_event_id
from schemas.terminals import TerminalEnrolled, TerminalKeysIssued
from schemas.values import Merchant

_AAD = "cardbus-terminal-keystore-v1|"


class CardAuthKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    public_key: str  # hex


class TerminalKeys(BaseModel):
    """The clear content of the key store (memory only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    terminal_id: str
    merchant: Merchant
    identity_key_id: str
    identity_private: str
    wrap_key_id: str
    wrap_private: str
    mac_key_id: str | None = None
    mac_key: str | None = None
    pin_key_id: str | None = None
    pin_key: str | None = None
    card_auth_keys: dict[str, CardAuthKey] = {}
    keys_event_id: str | None = None

    def signer(self) -> Signer:
        return Signer(self.identity_key_id, bytes.fromhex(self.identity_private))

    def wrap_private_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(bytes.fromhex(self.wrap_private))

    def mac_sealer(self) -> MacSealer:
        if not self.mac_key or not self.mac_key_id:
            raise MissingKeyError(f"terminal {self.terminal_id} has no MAC key yet "
                                  "(waiting for the platform's terminal keys)")
        return MacSealer(self.mac_key_id, bytes.fromhex(self.mac_key))

    def pin_key_bytes(self) -> bytes:
        if not self.pin_key:
            raise MissingKeyError(f"terminal {self.terminal_id} has no PIN key yet")
        return bytes.fromhex(self.pin_key)

    def card_auth_public(self, provider: str) -> bytes:
        key = self.card_auth_keys.get(provider)
        if key is None:
            raise MissingKeyError(f"no card-authentication key for provider {provider}")
        return bytes.fromhex(key.public_key)

    @property
    def ready(self) -> bool:
        return bool(self.mac_key and self.pin_key)


def _device_key(path: Path) -> bytes:
    env = os.environ.get("CARDBUS_DEVICE_KEY")
    if env:
        key = bytes.fromhex(env)
    elif path.exists():
        key = bytes.fromhex(path.read_text().strip())
    else:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
    if len(key) != 32:
        raise ConfigError("the device key must be 32 bytes (64 hex digits)")
    return key


class TerminalKeyStore:
    """Load, save, enroll, apply issued keys."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or sub_dir("terminal")
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "keystore.sealed"
        self._aead = AESGCM(_device_key(self.home / "device.key"))

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> TerminalKeys:
        if not self.path.exists():
            raise MissingKeyError(f"no terminal key store at {self.path}: run "
                                  "`cardbus terminal enroll` first")
        doc = json.loads(self.path.read_text())
        aad = (_AAD + doc["terminal_id"]).encode()
        try:
            clear = self._aead.decrypt(b64d(doc["nonce"]), b64d(doc["ct"]), aad)
        except (InvalidTag, KeyError, ValueError):
            raise UnwrapError("terminal key store does not open (wrong device key or "
                              "tampered file)") from None
        return TerminalKeys.model_validate_json(clear)

    def save(self, keys: TerminalKeys) -> None:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, keys.model_dump_json().encode(),
                                (_AAD + keys.terminal_id).encode())
        doc = {"v": 1, "terminal_id": keys.terminal_id, "nonce": b64e(nonce), "ct": b64e(ct)}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def enroll(self, terminal_id: str, merchant: Merchant) -> tuple[TerminalKeys,
                                                                    TerminalEnrolled]:
        """New key pairs for ``terminal_id``; the enrollment event, sealed by its identity."""
        ident_key = Ed25519PrivateKey.generate()
        ident = Signer(f"terminal:{terminal_id}.identity.1", ident_key)
        wrap = X25519PrivateKey.generate()
        keys = TerminalKeys(
            terminal_id=terminal_id, merchant=merchant,
            identity_key_id=ident.key_id,
            identity_private=ident_key.private_bytes_raw().hex(),
            wrap_key_id=f"terminal:{terminal_id}.wrap.1",
            wrap_private=wrap.private_bytes_raw().hex())
        self.save(keys)
        from datetime import UTC, datetime

        event = TerminalEnrolled(
            event_id=new_event_id(), correlation_id=f"enroll-{terminal_id}",
            occurred_at=datetime.now(UTC), producer=f"terminal:{terminal_id}",
            terminal_id=terminal_id, merchant=merchant,
            identity_key_id=ident.key_id, identity_public_key=b64e(ident.public_bytes()),
            wrap_key_id=keys.wrap_key_id,
            wrap_public_key=b64e(wrap.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
            reader_model="vpcd")
        return keys, event.sealed(ident.seal(event.canonical_bytes()))  # type: ignore[return-value]

    def apply_keys_issued(self, event: TerminalKeysIssued,
                          platform: Verifier | None = None) -> TerminalKeys:
        """Open the wrapped keys of ``event`` and store them with the card-auth keys."""
        keys = self.load()
        if event.terminal_id != keys.terminal_id:
            raise UnwrapError(f"terminal keys for {event.terminal_id}, not {keys.terminal_id}")
        if platform is not None:
            if event.seal is None:
                raise UnwrapError("terminal keys event carries no platform seal")
            platform.verify_seal(event.seal, event.canonical_bytes())
        update: dict[str, object] = {"keys_event_id": event.event_id}
        priv = keys.wrap_private_key()
        for issued in event.keys:
            usage = KeyUsage.MAC if issued.usage == "mac" else KeyUsage.PIN_ENC
            clear = unwrap_for_terminal(priv, keys.terminal_id, usage, issued.wrapped)
            alg = KeyAlg.HMAC if usage is KeyUsage.MAC else KeyAlg.AES
            if kcv(clear, alg) != issued.kcv:
                raise UnwrapError(f"key {issued.key_id}: check value does not match")
            prefix = "mac" if usage is KeyUsage.MAC else "pin"
            update[f"{prefix}_key_id"] = issued.key_id
            update[f"{prefix}_key"] = clear.hex()
        update["card_auth_keys"] = {
            k.provider_id: CardAuthKey(key_id=k.key_id, public_key=b64d(k.public_key).hex())
            for k in event.card_auth_keys}
        new = keys.model_copy(update=update)
        self.save(new)
        return new
