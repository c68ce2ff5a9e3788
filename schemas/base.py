"""The envelope every CardBus event shares, and the value types events are built from.

Every event is a frozen pydantic model with:

- ``type``: the event's past-tense name, the discriminator of the topic's union;
- ``schema_version``: a literal, bumped when the shape changes (see ``schemas.upcast``);
- ``event_id``, ``correlation_id`` (the payment, or the flow, it belongs to);
- ``occurred_at``: timezone-aware UTC;
- ``producer``: who made it (``platform``, ``provider:bank-a``, ``terminal:T-0001``, ...);
- ``seal``: a signature or MAC over the event's canonical bytes, where the event crosses a
  trust boundary.

The canonical byte form is defined here once: RFC 8785 (JSON Canonicalization Scheme) over
the event's JSON form without its ``seal``. A signature therefore does not depend on field
order or whitespace, and a verifier re-derives the same bytes from the decoded event.

Money is integer minor units plus an ISO 4217 currency code; a float is refused.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, TypedDict

import orjson
import rfc8785
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
)

# ---------------------------------------------------------------------------------------
# value types


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""A timezone-aware datetime, normalised to UTC. A naive datetime is refused."""

Hex = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]*$", to_upper=True)]
"""Upper-case hexadecimal bytes (cryptograms, MACs, ciphertexts, key blocks)."""

B64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]*={0,2}$")]
"""URL-safe base64 (signatures, public keys, opaque ciphertexts)."""

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 alphabetic currency code."""

MinorUnits = Annotated[StrictInt, Field(ge=0, le=10**12)]
"""An amount in the currency's minor units. Strict: a float (or a string) is refused."""

MaskedPan = Annotated[str, StringConstraints(pattern=r"^\d{6}\*{2,9}\d{4}$")]
"""A PAN shown as BIN + last four, the rest masked (``622202******1234``).
The full PAN never travels in clear: see ``PanToken`` and ``EncryptedBlob``."""

PanToken = Annotated[str, StringConstraints(pattern=r"^tok_[A-Za-z0-9_\-]{16,64}$")]
"""A keyed token (HMAC) of a PAN: the same card gives the same token, the token gives no PAN."""

Identity = Annotated[
    str,
    StringConstraints(pattern=r"^(platform|provider:[a-z0-9][a-z0-9\-]{0,31}"
                      r"|terminal:[A-Za-z0-9\-]{1,32}|audit|cli|bench)$"),
]
"""Who produced an event."""

ProviderId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")]
TerminalId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-]{1,32}$")]

_PAN_IN_TEXT = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def new_event_id() -> str:
    """A fresh event id. Only producers call this; decision logic takes ids from its input."""
    return uuid.uuid4().hex


class Header(TypedDict):
    """The envelope fields every event starts with (see ``header``)."""

    event_id: str
    correlation_id: str
    occurred_at: datetime
    producer: str


def header(producer: str, correlation_id: str, occurred_at: datetime | None = None, *,
           event_id: str | None = None) -> Header:
    """The envelope of a new event, the one way every party starts one:
    ``PaymentRequested(**header("terminal:T-1", payment_id, now), ...)``.

    ``event_id`` is fresh unless given (decisions pass ids derived from their input, so a replay
    gives the same ids); ``occurred_at`` is now unless given (decisions pass the time their
    input carries)."""
    return Header(event_id=event_id or new_event_id(), correlation_id=correlation_id,
                  occurred_at=occurred_at or datetime.now(UTC), producer=producer)


class Money(BaseModel):
    """An amount: integer minor units and an ISO 4217 currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: MinorUnits
    currency: Currency


class EncryptedBlob(BaseModel):
    """Something sensitive (a PAN, key material) encrypted to one recipient key.

    ``key_id`` names the key that opens it; ``alg`` the AEAD; ``nonce`` and ``ct`` are
    base64. The associated data is the recipient's business (it binds the blob to its use).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    alg: Literal["AES-256-GCM", "ECDH-X25519-HKDF-SHA256-AES-256-GCM"]
    nonce: B64
    ct: B64
    epk: B64 | None = None  # the sender's ephemeral public key, for ECDH wraps


class Seal(BaseModel):
    """A signature or MAC over an event's canonical bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alg: Literal["Ed25519", "HMAC-SHA256"]
    key_id: str
    value: B64


# ---------------------------------------------------------------------------------------
# the envelope


class Event(BaseModel):
    """Base of every event: the common envelope. Subclasses set ``type`` and
    ``schema_version`` as literals."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    type: str
    schema_version: int
    event_id: Annotated[str, StringConstraints(min_length=8, max_length=64)]
    correlation_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    occurred_at: UtcDatetime
    producer: Identity
    seal: Seal | None = None

    def canonical_bytes(self) -> bytes:
        """The bytes a seal covers: RFC 8785 JSON of the event without its seal."""
        return canonical_bytes(self)

    def sealed(self, seal: Seal) -> Event:
        """A copy of this event carrying ``seal``."""
        return self.model_copy(update={"seal": seal})


def canonical_bytes(event: BaseModel) -> bytes:
    """RFC 8785 canonical JSON of ``event`` without its ``seal`` field.

    For a model whose JSON can hold no number but integers (every CardBus event: money is
    integer minor units) and whose keys are its ASCII field names, sorted compact
    ``json.dumps`` *is* the RFC 8785 form (same escapes, same key order) and ~10x faster than
    the pure-Python ``rfc8785``; a model that could carry a float goes to ``rfc8785``. The
    equality is a property test (tests/schemas/test_properties.py)."""
    data: dict[str, Any] = event.model_dump(mode="json", exclude={"seal"})
    if _float_free(type(event)):
        return compact_sorted_json(data)
    return rfc8785.dumps(data)


def compact_sorted_json(data: Any) -> bytes:
    """Sorted, compact, UTF-8 JSON: RFC 8785 for float-free data with ASCII keys.

    orjson writes it ~3x faster than ``json.dumps`` (every seal made or checked needs these
    bytes); what orjson refuses (an integer past 64 bits, a lone surrogate) goes through
    ``json.dumps``, which writes the same form for everything orjson accepts (property tests
    in tests/schemas/test_properties.py and tests/audit/test_units.py)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(data, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")


@lru_cache(maxsize=256)
def _float_free(model: type[BaseModel]) -> bool:
    return '"number"' not in json.dumps(model.model_json_schema())


def contains_clear_pan(text: str) -> bool:
    """True if ``text`` holds a run of 13-19 digits that passes the Luhn check."""
    return any(luhn_ok(match.group()) for match in _PAN_IN_TEXT.finditer(text))


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by every card PAN."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def mask_pan(pan: str) -> str:
    """BIN (first six) + last four, the middle masked: the most a log or event may show."""
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValueError("not a PAN")
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
