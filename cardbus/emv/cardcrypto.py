"""The crypto the virtual cards and the dialogue use, all from ``cardbus.crypto``.

The card keeps its certificate in compact form (signature, public key, PAN token, CA key id as
TLVs); ``certificate_from_card`` rebuilds the provider's ``CardCertificate`` from what the
terminal read, so ``cardbus.crypto.card_auth`` checks it unchanged.
"""

from __future__ import annotations

from datetime import date

from cardbus.crypto.card_auth import (
    CardCertificate,
    card_sign,
    issue_card_certificate,
    new_card_key,
    verify_card_authentication,
)
from cardbus.crypto.emv import (
    derive_icc_master_key,
    derive_session_key,
    generate_arpc_method1,
    generate_arqc,
    verify_arpc_method1,
)
from cardbus.crypto.issuer_script import verify_script_command
from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.signing import Verifier
from cardbus.crypto.transit import card_load_mac1, card_tac, verify_operator_mac2
from schemas.base import mask_pan

__all__ = [
    "CardCertificate", "card_load_mac1", "card_sign", "card_tac", "certificate_from_card",
    "derive_icc_master_key", "derive_session_key", "generate_arpc_method1", "generate_arqc",
    "issue_card_certificate", "new_card_key", "verify_arpc_method1", "verify_card",
    "verify_operator_mac2", "verify_script_command",
]


def certificate_from_card(provider: str, ca_key_id: str, card_public_key: bytes,
                          pan_token: str, pan: str, expiry_yymm: str,
                          signature: bytes) -> CardCertificate:
    """The provider's certificate, rebuilt from the card's records."""
    return CardCertificate(provider_id=provider, ca_key_id=ca_key_id,
                           card_public_key=b64e(card_public_key), pan_token=pan_token,
                           masked_pan=mask_pan(pan), expiry=expiry_yymm,
                           signature=b64e(signature))


def verify_card(cert: CardCertificate, provider_key: bytes, un: bytes, atc: int,
                signature: bytes, pan: str, today: date) -> None:
    """Certificate under the provider's card-auth key, then the card's signature over UN||ATC."""
    verify_card_authentication(cert, Verifier(cert.ca_key_id, provider_key), un, atc, signature,
                               today=today, pan=pan)


def card_public_key(cert: CardCertificate) -> bytes:
    return b64d(cert.card_public_key)
