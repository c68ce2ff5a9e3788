"""PAN protection: keyed tokens for lookups, AEAD encryption for whoever must see the PAN.

``PanTokenizer.token(pan)`` -> ``tok_<43 chars>`` (HMAC-SHA256, base64url), which matches
``schemas.base.PanToken``: the same card gives the same token, the token gives no PAN.
``PanCipher`` encrypts a PAN to an ``EncryptedBlob`` (``alg="AES-256-GCM"``) bound by its
associated data to the key id and a context (the payment's correlation id), and
``reencrypt_pan`` moves it from one key to another in one call (terminal -> provider).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cardbus.crypto.cache import GCM_RANDOM_NONCE_LIMIT, NonceBudget
from cardbus.crypto.keystore import b64d, b64e
from cardbus.errors import KeyUsageError, UnwrapError
from schemas.base import EncryptedBlob, luhn_ok, mask_pan

__all__ = ["PanCipher", "PanTokenizer", "mask_pan", "reencrypt_pan", "valid_pan"]


def valid_pan(pan: str) -> bool:
    """12-19 digits passing the Luhn check."""
    return pan.isdigit() and 12 <= len(pan) <= 19 and luhn_ok(pan)


class PanTokenizer:
    """Keyed PAN tokens (HMAC-SHA256 under a token key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise KeyUsageError("PAN token key must be at least 32 bytes")
        self._base = hmac.new(key, b"cardbus-pan-token-v1|", hashlib.sha256)

    def token(self, pan: str) -> str:
        """``tok_`` + 43 base64url characters; the same PAN always gives the same token."""
        h = self._base.copy()
        h.update(pan.encode("ascii"))
        return "tok_" + base64.urlsafe_b64encode(h.digest()).decode("ascii").rstrip("=")


class PanCipher:
    """AES-256-GCM PAN encryption under one key id."""

    def __init__(self, key_id: str, key: bytes, *, budget: NonceBudget | None = None) -> None:
        if len(key) != 32:
            raise KeyUsageError("PAN encryption key must be AES-256")
        self.key_id = key_id
        self._aead = AESGCM(key)
        self.budget = budget or NonceBudget(key_id, GCM_RANDOM_NONCE_LIMIT)

    def _aad(self, context: str) -> bytes:
        return f"cardbus-pan-v1|{self.key_id}|{context}".encode()

    def encrypt(self, pan: str, context: str) -> EncryptedBlob:
        """Encrypt ``pan`` for use in ``context`` (e.g. the correlation id)."""
        self.budget.spend()
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, pan.encode("ascii"), self._aad(context))
        return EncryptedBlob(key_id=self.key_id, alg="AES-256-GCM", nonce=b64e(nonce), ct=b64e(ct))

    def decrypt(self, blob: EncryptedBlob, context: str) -> str:
        """The PAN; ``UnwrapError`` if the blob is for another key or context, or tampered."""
        if blob.alg != "AES-256-GCM" or blob.key_id != self.key_id:
            raise UnwrapError(f"PAN blob is {blob.alg} under {blob.key_id}, not {self.key_id}")
        try:
            pan = self._aead.decrypt(b64d(blob.nonce), b64d(blob.ct), self._aad(context))
        except (InvalidTag, ValueError):
            raise UnwrapError("encrypted PAN does not open (wrong key or context, or tampered)")\
                from None
        return pan.decode("ascii")


def reencrypt_pan(src: PanCipher, dst: PanCipher, blob: EncryptedBlob, context: str,
                  dst_context: str | None = None) -> EncryptedBlob:
    """Decrypt under ``src`` and encrypt under ``dst`` in one call."""
    return dst.encrypt(src.decrypt(blob, context), context if dst_context is None else dst_context)
