"""Card events: what the reader learnt from a card in one tap.

Topic: ``cardbus.taps`` (retained, keyed by terminal id). The same ``CardRead`` travels inside
``PaymentRequested`` and ``AuthorizationRequested``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import B64, EncryptedBlob, Event, Hex, MaskedPan, PanToken, TerminalId
from schemas.values import Aid, CardAuthOutcome, Counter, Cryptogram8, Text, hex_bytes

Psn = Annotated[str, hex_bytes(1)]
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
    card_auth: CardAuthOutcome
    card_certificate: B64 | None = None


class CardTapped(Event):
    """A card was tapped on a reader and the card dialogue finished."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["CardTapped"] = "CardTapped"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    reader: Text
    atr: AtrHex
    card: CardRead
