"""``IssuerCrypto`` for the decisions, on top of a provider's ``ProviderHsm``.

The PAN inside a request is encrypted to the provider and bound to the payment's correlation
id; every operation here opens it inside the HSM and lets nothing out but yes/no answers,
tokens and cryptograms.
"""

from __future__ import annotations

from agents.providers.state import PinCheck
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keystore import b64e
from cardbus.crypto.signing import Verifier, verify_event
from cardbus.errors import CryptogramInvalid, SignatureInvalid
from schemas.base import Event
from schemas.cards import CardRead
from schemas.cardstatus import ScriptKind


class HsmIssuer:
    """The provider's HSM, seen through the operations the decision functions use."""

    def __init__(self, hsm: ProviderHsm, platform: Verifier) -> None:
        self.hsm = hsm
        self.provider_id = hsm.provider_id
        self.platform = platform

    def verify_platform(self, event: Event) -> None:
        if event.producer != "platform":
            raise SignatureInvalid(f"request produced by {event.producer}, not the platform")
        verify_event(event, lambda kid: self.platform if kid == self.platform.key_id else None)

    def card_token(self, card: CardRead, context: str) -> str:
        return self.hsm.pan_token(card.pan_encrypted, context)

    def verify_arqc(self, card: CardRead, context: str) -> None:
        self.hsm.authorize_cryptogram(
            card.pan_encrypted, context, card.psn, card.atc, _hex(card.cdol_data),
            _hex(card.arqc), None, last_atc=None)

    def make_arpc(self, card: CardRead, context: str, response_code: str) -> str:
        return self.hsm.authorize_cryptogram(
            card.pan_encrypted, context, card.psn, card.atc, _hex(card.cdol_data),
            _hex(card.arqc), response_code.encode("ascii"), last_atc=None).hex().upper()

    def pin_matches(self, card: CardRead, context: str, pin_block: str, pin_key_id: str,
                    pin: PinCheck) -> bool:
        return self.hsm.verify_pin_sealed(pin_key_id, bytes.fromhex(pin_block),
                                          card.pan_encrypted, context, pin.sealed_value,
                                          card.pan_token, pin.pvki)

    def issuer_script(self, card: CardRead, context: str, kind: ScriptKind) -> str:
        return b64e(self.hsm.issuer_script(card.pan_encrypted, context, card.psn, card.atc,
                                           bytes.fromhex(card.arqc), block=kind == "block"))

    def seal(self, event: Event) -> Event:
        return self.hsm.sign_event(event)


def _hex(text: str) -> bytes:
    """Bytes of a hex field; ``CryptogramInvalid`` (a decline) for an odd-length one."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CryptogramInvalid("cryptogram field is not whole bytes of hex") from None
