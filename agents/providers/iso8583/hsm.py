"""The bridge's HSM facade: the only place the PAN is opened and the PIN block is translated.

CardBus hands the bridge what it hands every provider: the PAN encrypted to the provider's PAN
key (bound to the payment) and the PIN block as ISO 9564 format 4 under the provider's PIN key
(AES). The bank's host speaks the classic zone of ISO 8583: the PAN in clear in DE 2, inside the
bank's own channel, and an ISO 9564 format 0 PIN block under a double-length TDES zone PIN key
(ZPK) in DE 52. This facade does both translations inside one call each; nothing here logs, and
no method returns a PIN or a clear PIN block.

Beyond a provider's usual keys, the bridge keeps ``zpk:<id>`` (the zone PIN key shared with the
host) and ``hostfile:<id>`` (the key of the host's card file). They are made once, under a file
lock, by ``ensure_bridge_keys`` (``cardbus iso-host start`` and card issuance call it). The host
gets its keys (ZPK, the issuer master key for cryptograms, the PIN verification key, the card
file key) from ``host_key_components`` at its start, on its stdin: the key ceremony between a
bank's CardBus bridge and its own host, done on one machine. The bank owns both ends.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cardbus import vault
from cardbus.crypto import pin
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage
from cardbus.crypto.keystore import KeyStore
from cardbus.errors import MissingKeyError, UnwrapError
from schemas.base import EncryptedBlob


def _bridge_keys(provider_id: str) -> tuple[tuple[str, KeyUsage, KeyAlg], ...]:
    return ((f"zpk:{provider_id}", KeyUsage.PIN_ENC, KeyAlg.TDES),
            (f"hostfile:{provider_id}", KeyUsage.PAN_ENC, KeyAlg.AES))


def add_bridge_keys(store: KeyStore, provider_id: str) -> bool:
    """Generate the bridge's own keys in ``store`` where missing; True if any was made."""
    made = False
    for key_id, usage, alg in _bridge_keys(provider_id):
        if key_id not in store:
            store.generate(key_id, usage, f"provider:{provider_id}", alg)
            made = True
    return made


def ensure_bridge_keys(provider_id: str, home: Path | None = None) -> None:
    """Create the bridge's own keys in its key store if missing (under a lock, saved)."""
    party = f"provider-{provider_id}"
    lock = vault.party_dir(party, home) / ".bridge-keys.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        store = vault.FileKeyStore(party, home)
        if add_bridge_keys(store, provider_id):
            store.save()


class BridgeHsm(ProviderHsm):
    """A provider HSM with the bridge's two translations and the host's keys."""

    def __init__(self, provider_id: str, keystore: KeyStore) -> None:
        super().__init__(provider_id, keystore)
        for key_id, _, _ in _bridge_keys(provider_id):
            if key_id not in keystore:
                raise MissingKeyError(f"{key_id} is missing: run `cardbus iso-host start` (or "
                                      f"agents.providers.iso8583.hsm.ensure_bridge_keys) first")
        self._zpk = self._k("zpk", KeyUsage.PIN_ENC)
        self._card_file = AESGCM(self._k("hostfile", KeyUsage.PAN_ENC))

    def pan_for_host(self, pan_blob: EncryptedBlob, context: str) -> str:
        """The PAN for DE 2 of a message to the bank's own host (nowhere else)."""
        return self._pan(pan_blob, context)

    def pin_block_for_host(self, pin_key_id: str, pin_block: bytes, pan_blob: EncryptedBlob,
                           context: str) -> bytes:
        """Format 4 under our PIN key -> format 0 under the host's zone PIN key (DE 52)."""
        if not pin_key_id.startswith(f"pin:{self.provider_id}.v"):
            raise UnwrapError(f"PIN block is under {pin_key_id}, not our PIN key")
        src = self._key(pin_key_id, KeyUsage.PIN_ENC, self.identity)
        return pin.translate_to_iso0(src, self._zpk, pin_block, self._pan(pan_blob, context))

    def card_secret(self, sealed: EncryptedBlob, pan_token: str) -> str:
        """A card's sealed verification data (its PVV, under the provider-only ``pvd`` key), for
        the host's card file only."""
        return self._open_card_secret(sealed, pan_token)

    @property
    def card_file_cipher(self) -> AESGCM:
        """The AEAD the host's card file is sealed with."""
        return self._card_file

    def host_key_components(self) -> dict[str, str]:
        """The host's keys as clear hex components, for its stdin at start (key ceremony)."""
        return {"zpk": self._zpk.hex().upper(),
                "imk_ac": self._k("imk", KeyUsage.EMV_IMK_AC).hex().upper(),
                "pvk": self._k("pvk", KeyUsage.PIN_VERIFY).hex().upper(),
                "card_file_key": self._k("hostfile", KeyUsage.PAN_ENC).hex().upper()}


def bridge_hsm(provider_id: str, home: Path | None = None) -> BridgeHsm:
    """The bridge's HSM over its file key store (its keys made first if missing)."""
    ensure_bridge_keys(provider_id, home)
    return BridgeHsm(provider_id, vault.FileKeyStore(f"provider-{provider_id}", home))
