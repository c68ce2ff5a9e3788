"""What an issuer's HSM hands out when it issues: a card's personalisation data (to the card,
never on the bus), and a new e-purse sealed for the platform's card manager."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardbus.crypto import card_auth, scp03
from schemas.base import EncryptedBlob


@dataclass(frozen=True)
class CardProfile:
    """Personalisation data for one card (goes to the card, never on the bus)."""

    pan: str = field(repr=False)
    psn: str
    expiry: str
    icc_master_key: bytes = field(repr=False)
    card_private_key: bytes = field(repr=False)
    certificate: card_auth.CardCertificate
    pan_token: str
    pvv: str = field(repr=False)
    pvki: str = "1"
    icc_mk_smi: bytes = field(default=b"", repr=False)  # issuer scripts (MK-SMI)
    isd_kdd: bytes = b""  # key diversification data of the card's security domain
    isd_keys: scp03.StaticKeys | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SealedPurse:
    """A new e-purse as its operator hands it to the platform: the token that stands for it,
    its number under the operator's PAN key, its load and TAC keys in TR-31 blocks."""

    card_token: str
    number: EncryptedBlob
    load_block: str
    tac_block: str
    load_kcv: str
    tac_kcv: str
