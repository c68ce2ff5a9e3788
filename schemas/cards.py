"""Card events: what the reader learnt from a card in one tap.

Topic: ``cardbus.taps`` (retained, keyed by terminal id). The same ``CardRead`` travels inside
``PaymentRequested`` and ``AuthorizationRequested``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import B64, EncryptedBlob, Event, Hex, MaskedPan, PanToken, TerminalId
from schemas.upcast import Raw, upcaster
from schemas.values import Aid, CardAuthOutcome, Counter, Cryptogram8, Text, hex_bytes

Psn = Annotated[str, hex_bytes(1)]
CvmResults = Annotated[str, hex_bytes(3)]
"""EMV 9F34: CVM performed (byte 1, e.g. 02/42 online enciphered PIN, 1F no CVM required,
3F no CVM performed), condition (byte 2), result (byte 3: 00 unknown, 01 failed, 02 ok)."""
NO_CVM_PERFORMED = "3F0000"
UnpredictableNumber = Annotated[str, hex_bytes(4)]
AtrHex = Annotated[str, hex_bytes(2, 33)]


class CardRead(BaseModel):
    """The card data of one tap. The PAN travels only masked, tokenized and encrypted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aid: Aid
    masked_pan: MaskedPan
    pan_token: PanToken
    pan_encrypted: EncryptedBlob = Field(description="the PAN, encrypted to the next hop")
    psn: Psn = "00"
    atc: Counter
    arqc: Cryptogram8
    cdol_data: Hex = Field(max_length=512, description="the CDOL1 data the ARQC covers")
    unpredictable_number: UnpredictableNumber
    card_auth: CardAuthOutcome = Field(description="the terminal's card authentication")
    cvm_results: CvmResults = Field(default=NO_CVM_PERFORMED,
                                    description="9F34: the cardholder verification performed")
    card_certificate: B64 | None = None


def add_cvm_results(raw: Raw) -> Raw:
    """Upcast step for an event carrying a ``card`` from before CVM results: none performed."""
    card = raw.get("card")
    if isinstance(card, dict):  # a new dict: the original object stays as it was sealed
        raw["card"] = {"cvm_results": NO_CVM_PERFORMED, **card}
    return raw


class CardTapped(Event):
    """A card was tapped on a reader and the card dialogue finished."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["CardTapped"] = "CardTapped"
    schema_version: Literal[2] = 2

    terminal_id: TerminalId
    reader: Text
    atr: AtrHex
    card: CardRead


@upcaster("CardTapped", 1)
def _card_tapped_v1_to_v2(raw: Raw) -> Raw:
    """v1 cards carried no CVM results (9F34)."""
    raw = add_cvm_results(raw)
    raw["schema_version"] = 2
    return raw
