"""Key usages, key check values and fresh key generation."""

from __future__ import annotations

import hashlib
import hmac
import os
from enum import StrEnum

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC


class KeyUsage(StrEnum):
    """What a stored key may be used for. A key is only ever used for its one usage."""

    STORAGE = "storage"  # the platform storage key (never stored in the key store itself)
    KBPK = "kbpk"  # TR-31 key block protection key, provider <-> platform
    PIN_ENC = "pin_enc"  # ISO 9564 format 4 PIN block key (AES)
    PIN_VERIFY = "pin_verify"  # PVK: Visa PVV / IBM 3624 (TDES)
    PIN_DATA = "pin_data"  # provider-only AES-256-GCM key sealing PIN verification data (PVVs)
    MAC = "mac"  # HMAC-SHA256 terminal MAC key
    PAN_ENC = "pan_enc"  # AES-256-GCM PAN encryption key
    PAN_TOKEN = "pan_token"  # noqa: S105 - a usage name, not a secret; HMAC-SHA256 PAN tokenisation key
    EMV_IMK_AC = "emv_imk_ac"  # issuer master key for application cryptograms (TDES)
    EMV_IMK_SMI = "emv_imk_smi"  # issuer master key for issuer script integrity (TDES)
    GP_ISD_MASTER = "gp_isd_master"  # issuer's master for its cards' SCP03 keys (AES-128)
    CARD_AUTH_CA = "card_auth_ca"  # provider's card-authentication signing key (Ed25519)
    SIGNING = "signing"  # identity signing key (Ed25519)
    TERMINAL_KEX = "terminal_kex"  # terminal's X25519 key-agreement private key
    TRANSIT_LOAD = "transit_load"  # operator's master load key (TDES)
    TRANSIT_TAC = "transit_tac"  # operator's master TAC key (TDES)
    CARD_PERSO = "card_perso"  # one card's own key on its way to personalisation (e-purse DLK/DTK)


class KeyAlg(StrEnum):
    """The algorithm a key belongs to (decides its length and its key check value)."""

    AES = "AES"
    TDES = "TDES"
    HMAC = "HMAC"
    ED25519 = "Ed25519"
    X25519 = "X25519"


_LENGTHS: dict[KeyAlg, int] = {
    KeyAlg.AES: 32,
    KeyAlg.TDES: 16,
    KeyAlg.HMAC: 32,
    KeyAlg.ED25519: 32,
    KeyAlg.X25519: 32,
}


def _fix_des_parity(key: bytes) -> bytes:
    out = bytearray(key)
    for i, b in enumerate(out):
        b &= 0xFE
        out[i] = b | (bin(b).count("1") + 1) % 2
    return bytes(out)


def new_key(alg: KeyAlg, length: int | None = None) -> bytes:
    """Fresh random key bytes for ``alg`` (DES keys get odd parity)."""
    raw = os.urandom(length or _LENGTHS[alg])
    return _fix_des_parity(raw) if alg is KeyAlg.TDES else raw


def kcv(key: bytes, alg: KeyAlg) -> str:
    """Key check value, 6 hex digits.

    AES: CMAC of a zero block (ANSI X9.24-1:2017, as used by TR-31 version D);
    TDES: encryption of a zero block (the legacy KCV); other keys: HMAC-SHA256 of a zero block.
    """
    if alg is KeyAlg.AES:
        c = CMAC(algorithms.AES(key))
        c.update(bytes(16))
        return c.finalize()[:3].hex().upper()
    if alg is KeyAlg.TDES:
        k3 = key + key[:8] if len(key) == 16 else key  # two-key TDES as its 3-key form
        enc = Cipher(TripleDES(k3), modes.ECB()).encryptor()  # noqa: S305 - KCV is ECB by definition
        return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()
    return hmac.new(key, bytes(16), hashlib.sha256).digest()[:3].hex().upper()
