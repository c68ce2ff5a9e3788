"""Platform -> terminal key delivery: X25519 ECDH + HKDF-SHA256 + AES-256-GCM.

A key is wrapped to one terminal's X25519 public key with a fresh ephemeral key. HKDF's info
and the AEAD's associated data both bind terminal id, key id and usage, so a blob opens only
in that terminal's key store, for that key id and usage. The result is a
``schemas.base.EncryptedBlob`` (``alg="ECDH-X25519-HKDF-SHA256-AES-256-GCM"``, ``epk`` set).
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import b64d, b64e
from cardbus.errors import UnwrapError
from schemas.base import EncryptedBlob

ALG: Final = "ECDH-X25519-HKDF-SHA256-AES-256-GCM"
_SALT = b"cardbus-terminal-key-wrap-v1"


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _binding(terminal_id: str, key_id: str, usage: KeyUsage) -> bytes:
    return f"cardbus-wrap-v1|terminal:{terminal_id}|{key_id}|{usage.value}".encode()


def _kek(shared: bytes, epk: bytes, recipient: bytes, binding: bytes) -> bytes:
    info = binding + b"|" + epk + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(shared)


def wrap_for_terminal(terminal_public: X25519PublicKey | bytes, terminal_id: str, key_id: str,
                      usage: KeyUsage, key: bytes) -> EncryptedBlob:
    """Encrypt ``key`` to the terminal; only that terminal, for that key id/usage, opens it."""
    if isinstance(terminal_public, bytes):
        terminal_public = X25519PublicKey.from_public_bytes(terminal_public)
    eph = X25519PrivateKey.generate()
    epk = _raw(eph.public_key())
    binding = _binding(terminal_id, key_id, usage)
    kek = _kek(eph.exchange(terminal_public), epk, _raw(terminal_public), binding)
    nonce = os.urandom(12)
    ct = AESGCM(kek).encrypt(nonce, key, binding)
    return EncryptedBlob(key_id=key_id, alg=ALG, nonce=b64e(nonce), ct=b64e(ct), epk=b64e(epk))


def unwrap_for_terminal(terminal_private: X25519PrivateKey, terminal_id: str, usage: KeyUsage,
                        blob: EncryptedBlob) -> bytes:
    """Open a wrapped key with the terminal's private key; ``UnwrapError`` on any mismatch."""
    if blob.alg != ALG or blob.epk is None:
        raise UnwrapError(f"blob for {blob.key_id} is {blob.alg}, not an ECDH key wrap")
    try:
        epk = b64d(blob.epk)
        nonce, ct = b64d(blob.nonce), b64d(blob.ct)
        eph_pub = X25519PublicKey.from_public_bytes(epk)
        shared = terminal_private.exchange(eph_pub)
    except ValueError as exc:
        raise UnwrapError(f"wrapped key {blob.key_id} is malformed") from exc
    binding = _binding(terminal_id, blob.key_id, usage)
    kek = _kek(shared, epk, _raw(terminal_private.public_key()), binding)
    try:
        return AESGCM(kek).decrypt(nonce, ct, binding)
    except InvalidTag:
        raise UnwrapError(
            f"wrapped key {blob.key_id} does not open for terminal {terminal_id} "
            f"as {usage.value} (wrong terminal, key id or usage, or tampered)"
        ) from None
