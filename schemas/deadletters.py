"""Dead letters: a message an agent could not use, kept with its reason and original bytes.

Topic: ``cardbus.dead-letters`` (retained, keyed by the original topic). The original bytes are
kept up to ``MAX_ORIGINAL_BYTES`` (so that a dead letter of an oversized message still fits the
payload limit); ``original_size`` and ``original_sha256`` describe the whole message.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, ClassVar, Literal, TypedDict

from pydantic import Field, StringConstraints

from schemas.base import B64, Event
from schemas.values import Count, Sha256Hex

MAX_ORIGINAL_BYTES = 32 * 1024

TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-]{1,249}$")]
ErrorCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]


class EventDeadLettered(Event):
    """A message that was set aside, and why."""

    SEALED_BY: ClassVar[str] = ""

    type: Literal["EventDeadLettered"] = "EventDeadLettered"
    schema_version: Literal[1] = 1

    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    error_code: ErrorCode = Field(description="the CardBusError code, e.g. decode, mac_invalid")
    field: Annotated[str, StringConstraints(max_length=200)] | None = None
    original_topic: TopicName
    original_partition: Count
    original_offset: Count
    original_record_key_b64: B64 | None = None
    original_b64: B64 = Field(max_length=(MAX_ORIGINAL_BYTES * 4) // 3 + 4)
    original_size: Count
    original_sha256: Sha256Hex
    original_truncated: bool = False


class OriginalFields(TypedDict):
    """The ``original_*`` fields of an ``EventDeadLettered``."""

    original_b64: str
    original_record_key_b64: str | None
    original_size: int
    original_sha256: str
    original_truncated: bool


def original_fields(data: bytes, key: bytes | None = None) -> OriginalFields:
    """The ``original_*`` fields for ``data`` (truncated to ``MAX_ORIGINAL_BYTES``) and ``key``."""
    kept = data[:MAX_ORIGINAL_BYTES]
    return {
        "original_b64": base64.urlsafe_b64encode(kept).decode(),
        "original_record_key_b64": (base64.urlsafe_b64encode(key).decode()
                                    if key is not None else None),
        "original_size": len(data),
        "original_sha256": hashlib.sha256(data).hexdigest().upper(),
        "original_truncated": len(kept) < len(data),
    }
