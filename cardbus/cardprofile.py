"""The card personalisation profile: what a provider puts on a card when it issues one.

A profile holds the card's secrets (its ICC master key, its private key, a transit load key). It
is made by the issuing provider's HSM (``agents.providers``: a bank's ``issue_card``, a transit
operator's ``issue_transit_card``) and handed to the card personalisation (the virtual cards in
``cards/`` keep it in a 0600 file under the state folder); it never travels on the bus.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import luhn_ok


class CardProfile(BaseModel):
    """A personalised card: identity, application, and its secrets (hex)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    card_id: str
    provider: str
    kind: Literal["emv", "transit"]
    aid: str
    label: str
    pan: str = Field(repr=False)
    psn: str = "00"
    expiry: str  # YYMMDD
    icc_master_key: str = Field(default="", repr=False)
    card_private_key: str = Field(default="", repr=False)
    card_public_key: str = ""
    card_certificate: str = ""  # the provider's signature over the certificate (hex)
    ca_key_id: str = ""
    pan_token: str = ""
    load_key: str = Field(default="", repr=False)  # transit: the card's load key (DLK)
    tac_key: str = Field(default="", repr=False)  # transit: the card's TAC key (DTK)
    initial_balance: int = 0
    icc_smi_key: str = ""  # EMV: the card's MK-SMI, checks issuer script MACs
    # GlobalPlatform issuer security domain (a bank card with these is a multi-application
    # card, ``cards.multiapp``): SCP03 key set (AES-128), key version, diversification data.
    isd_enc: str = ""
    isd_mac: str = ""
    isd_dek: str = ""
    isd_kvn: int = 0x30
    isd_kdd: str = ""

    def masked(self) -> str:
        return self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]


def make_pan(bin_: str, length: int = 16) -> str:
    """A random Luhn-valid PAN starting with ``bin_``."""
    body = bin_ + "".join(secrets.choice("0123456789") for _ in range(length - len(bin_) - 1))
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")  # pragma: no cover
