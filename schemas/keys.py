"""Key lifecycle events: a signing or MAC key revoked, kept on the key-history topic.

Topic: ``cardbus.key-history`` (not compacted: every registration, key issue and revocation is
kept for the audit's retention, so the audit knows which key was valid at an event's time).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from schemas.base import Event
from schemas.values import KeyId, Text


class KeyRevoked(Event):
    """A key may no longer seal anything from ``revoked_at`` on (stolen, lost, retired early).
    The platform (the operator) may revoke any key; a provider or terminal only its own."""

    SEALED_BY: ClassVar[str] = "platform identity key, or the key owner's identity key"

    type: Literal["KeyRevoked"] = "KeyRevoked"
    schema_version: Literal[1] = 1

    key_id: KeyId
    owner: Text
    revoked_at: datetime
    reason: Text
