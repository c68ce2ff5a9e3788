"""Card authentication edges with literal values: the certificate's expiry field, the ATC and
unpredictable-number bounds, the signed message checked with ``cryptography``'s Ed25519
directly, and each exact one-line reason a terminal shows."""

from __future__ import annotations

from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cardbus.crypto import card_auth
from cardbus.crypto.keystore import b64d
from cardbus.crypto.signing import Signer
from cardbus.errors import CardAuthenticationError

PAN = "4761739001010010"
CA = Signer.generate("card-auth:bank-a.v1")
TODAY = date(2026, 12, 5)


def refused(message: str) -> pytest.RaisesContext[CardAuthenticationError]:
    import re

    return pytest.raises(CardAuthenticationError, match=f"^{re.escape(message)}$")


def cert(expiry: str = "2812", pan: str = PAN) -> tuple[card_auth.CardCertificate, bytes]:
    private, public = card_auth.new_card_key()
    return card_auth.issue_card_certificate(CA, "bank-a", public, pan, "tok_0123456789abcdef", expiry), \
        private


@pytest.mark.parametrize("expiry", ["2601", "2612", "9912"])
def test_a_certificate_takes_months_01_to_12(expiry: str) -> None:
    assert cert(expiry)[0].expiry == expiry


@pytest.mark.parametrize("expiry", ["261", "26123", "26a1", "2600", "2613"])
def test_a_certificate_refuses_any_other_expiry(expiry: str) -> None:
    with refused("expiry must be YYMM"):
        cert(expiry)


def test_the_card_signs_un_and_a_two_byte_atc() -> None:
    c, private = cert()
    for atc in (0, 1, 0xFFFF):
        sig = card_auth.card_sign(private, b"\x01\x02\x03\x04", atc)
        Ed25519PublicKey.from_public_bytes(b64d(c.card_public_key)).verify(
            sig, b"cardbus-card-auth-v1|" + b"\x01\x02\x03\x04" + atc.to_bytes(2, "big"))
        card_auth.verify_card_authentication(c, CA.verifier, b"\x01\x02\x03\x04", atc, sig,
                                             today=TODAY, pan=PAN)
    for un, atc in ((b"\x01\x02\x03", 1), (b"\x01\x02\x03\x04", -1),
                    (b"\x01\x02\x03\x04", 0x10000)):
        with refused("unpredictable number must be >= 4 bytes, ATC 0..65535"):
            card_auth.card_sign(private, un, atc)


def test_each_failure_names_itself() -> None:
    c, private = cert("2611")
    sig = card_auth.card_sign(private, b"\x00" * 4, 7)
    other = Signer.generate("card-auth:bank-b.v1")
    with refused(f"certificate is under card-auth:bank-a.v1, not {other.key_id}"):
        card_auth.verify_card_certificate(c, other.verifier, today=TODAY)
    forged = c.model_copy(update={"masked_pan": "476173******9999"})
    with refused("card certificate signature does not verify"):
        card_auth.verify_card_certificate(forged, CA.verifier, today=TODAY)
    with refused("card certificate expired 2611"):
        card_auth.verify_card_certificate(c, CA.verifier, today=TODAY)
    c, private = cert()
    with refused("card certificate is for another PAN"):
        card_auth.verify_card_certificate(c, CA.verifier, today=TODAY, pan="4761739001010028")
    with refused("card did not prove it holds its private key"):
        card_auth.verify_card_authentication(c, CA.verifier, b"\x00" * 4, 8, sig,
                                             today=TODAY, pan=PAN)
    card_auth.verify_card_certificate(c, CA.verifier, today=date(2028, 12, 31), pan=PAN)
