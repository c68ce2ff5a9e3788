"""Value types shared by several event families (on top of those in ``schemas.base``).

Hex values are upper-case on the wire (one canonical spelling, so signatures are stable); a
lower-case hex string is refused, not silently converted.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)


def hex_bytes(n_min: int, n_max: int | None = None) -> object:
    """A constraint for upper-case hex of ``n_min`` (..``n_max``) bytes."""
    hi = n_min if n_max is None else n_max
    return StringConstraints(pattern=rf"^(?:[0-9A-F]{{2}}){{{n_min},{hi}}}$")


Aid = Annotated[str, hex_bytes(5, 16)]
"""An EMV application identifier (RID + PIX), 5-16 bytes."""

Cryptogram8 = Annotated[str, hex_bytes(8)]
"""An 8-byte cryptogram or MAC (ARQC, ARPC, MAC1/MAC2, TAC)."""

Mac4 = Annotated[str, hex_bytes(4)]
"""A 4-byte MAC as transit e-purses use (MAC1, MAC2, TAC)."""

Kcv = Annotated[str, hex_bytes(3)]
"""A key check value: the first 3 bytes of a zero block under the key. Identifies, not reveals."""

Sha256Hex = Annotated[str, hex_bytes(32)]
"""A SHA-256 digest in hex (hash chains, fingerprints)."""

EncryptedPinBlock = Annotated[str, hex_bytes(8, 16)]
"""An ISO 9564 PIN block **encrypted** under a named PIN key (8 bytes TDES, 16 bytes AES).
Never a clear PIN block: the field beside it names the key it is encrypted under."""

Tr31KeyBlock = Annotated[str, StringConstraints(pattern=r"^[ABCD][0-9]{4}[0-9A-Z]{11,9990}$")]
"""An ANSI X9.143 / TR-31 key block: header in clear, key **encrypted** under the KBPK."""

ResponseCode = Annotated[str, StringConstraints(pattern=r"^[0-9A-Z]{2}$")]
"""An ISO 8583 field-39 style response code (``00`` approved, ``05`` do not honour, ...)."""

AuthCode = Annotated[str, StringConstraints(pattern=r"^[0-9A-Z]{6}$")]
"""An authorization (approval) code, six characters."""

KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}$")]
"""The name of a key (never the key): ``bank-a/pin/2025-01``."""

_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _plain_text(value: str) -> str:
    """Refuse control characters (C0, DEL, C1) and bidirectional controls (the Trojan
    Source characters, CVE-2021-42574): text shown to people or logs must read as it is."""
    found = _UNSAFE_TEXT.search(value)
    if found:
        raise ValueError(f"control or bidi character U+{ord(found.group()):04X} in text")
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=200),
                 AfterValidator(_plain_text)]
Counter = Annotated[StrictInt, Field(ge=0, le=0xFFFF)]
"""A two-byte card counter (ATC, e-purse load counter)."""

SeqNo = Annotated[StrictInt, Field(ge=0)]
Count = Annotated[StrictInt, Field(ge=0)]
Amount = Annotated[StrictInt, Field(ge=0, le=10**12)]
"""Integer minor units, where the currency sits elsewhere in the same record."""

Digits = Annotated[str, StringConstraints(pattern=r"^\d{4,8}$")]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class BinRange(BaseModel):
    """An inclusive range of card number prefixes (BIN/IIN), both ends of the same length."""

    model_config = _FROZEN

    low: Digits
    high: Digits

    @model_validator(mode="after")
    def _ordered(self) -> BinRange:
        if len(self.low) != len(self.high) or self.low > self.high:
            raise ValueError("bin range: low and high must have the same length, low <= high")
        return self

    def covers(self, prefix_source: str) -> bool:
        """True if the digits ``prefix_source`` start with a prefix inside this range."""
        head = prefix_source[: len(self.low)]
        return len(head) == len(self.low) and self.low <= head <= self.high


class Merchant(BaseModel):
    """Who is being paid."""

    model_config = _FROZEN

    merchant_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-]{1,15}$")]
    name: Text
    mcc: Annotated[str, StringConstraints(pattern=r"^\d{4}$")]


CardAuthOutcome = Literal["passed", "failed", "not_performed"]
"""The terminal's card-authentication result (the card proved it holds its private key)."""
