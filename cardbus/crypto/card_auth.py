"""Card authentication: a per-card key pair, certified by its provider's card-auth key.

Issuance (provider): ``new_card_key()``, then ``issue_card_certificate`` signs the card's public
key, PAN token, masked PAN and expiry with the provider's card-authentication key (Ed25519).
In a payment (terminal): the terminal sends an unpredictable number, the card answers
``card_sign(private, un, atc)``; ``verify_card_authentication`` checks the certificate under
the provider's public key, its expiry and PAN, then the card's signature: proof that the card
holds the private key. Every failure is a ``CardAuthenticationError``.
"""

from __future__ import annotations

from datetime import date

import rfc8785
from pydantic import BaseModel, ConfigDict

from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.signing import Signer, Verifier
from cardbus.errors import CardAuthenticationError, SignatureInvalid
from schemas.base import B64, MaskedPan, PanToken, ProviderId, mask_pan

_CERT_DOMAIN = b"cardbus-card-cert-v1|"
_AUTH_DOMAIN = b"cardbus-card-auth-v1|"


class CardCertificate(BaseModel):
    """A provider's statement: this public key belongs to this card until ``expiry``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_id: ProviderId
    ca_key_id: str
    card_public_key: B64
    pan_token: PanToken
    masked_pan: MaskedPan
    expiry: str  # YYMM, the card's expiry month (valid through its last day)
    signature: B64 = ""

    def signed_bytes(self) -> bytes:
        """What the provider signs: RFC 8785 JSON of every field but the signature."""
        return _CERT_DOMAIN + rfc8785.dumps(self.model_dump(mode="json", exclude={"signature"}))


def new_card_key() -> tuple[bytes, bytes]:
    """A fresh card key pair: (raw private 32 bytes, raw public 32 bytes)."""
    key = Signer.generate("card")
    return key.private_bytes(), key.public_bytes()


def issue_card_certificate(ca: Signer, provider_id: str, card_public_key: bytes, pan: str,
                           pan_token: str, expiry: str) -> CardCertificate:
    """Provider side: certify a card's public key."""
    if len(expiry) != 4 or not expiry.isdigit() or not 1 <= int(expiry[2:]) <= 12:
        raise CardAuthenticationError("expiry must be YYMM")
    cert = CardCertificate(provider_id=provider_id, ca_key_id=ca.key_id,
                           card_public_key=b64e(card_public_key), pan_token=pan_token,
                           masked_pan=mask_pan(pan), expiry=expiry)
    return cert.model_copy(update={"signature": b64e(ca.sign(cert.signed_bytes()))})


def _auth_message(unpredictable_number: bytes, atc: int) -> bytes:
    if len(unpredictable_number) < 4 or not 0 <= atc <= 0xFFFF:
        raise CardAuthenticationError("unpredictable number must be >= 4 bytes, ATC 0..65535")
    return _AUTH_DOMAIN + unpredictable_number + atc.to_bytes(2, "big")


def card_sign(card_private_key_bytes: bytes, unpredictable_number: bytes, atc: int) -> bytes:
    """Card side: sign the terminal's unpredictable number and the ATC (64 bytes)."""
    return Signer("card", card_private_key_bytes).sign(_auth_message(unpredictable_number, atc))


def verify_card_certificate(cert: CardCertificate, ca: Verifier, *, today: date,
                            pan: str | None = None) -> None:
    """Check the provider's signature on the certificate, its expiry and (if given) its PAN."""
    if cert.ca_key_id != ca.key_id:
        raise CardAuthenticationError(f"certificate is under {cert.ca_key_id}, not {ca.key_id}")
    try:
        ca.verify(b64d(cert.signature), cert.signed_bytes())
    except (SignatureInvalid, ValueError):
        raise CardAuthenticationError("card certificate signature does not verify") from None
    yy, mm = int(cert.expiry[:2]), int(cert.expiry[2:])
    if (today.year % 100, today.month) > (yy, mm):
        raise CardAuthenticationError(f"card certificate expired {cert.expiry}")
    if pan is not None and mask_pan(pan) != cert.masked_pan:
        raise CardAuthenticationError("card certificate is for another PAN")


def verify_card_authentication(cert: CardCertificate, ca: Verifier, unpredictable_number: bytes,
                               atc: int, signature: bytes, *, today: date,
                               pan: str | None = None) -> None:
    """Terminal side: the certificate, then the card's signature over UN || ATC."""
    verify_card_certificate(cert, ca, today=today, pan=pan)
    try:
        card_key = Verifier("card", b64d(cert.card_public_key))
        card_key.verify(signature, _auth_message(unpredictable_number, atc))
    except (SignatureInvalid, ValueError):
        raise CardAuthenticationError("card did not prove it holds its private key") from None
