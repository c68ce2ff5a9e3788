"""Audit findings: what ``cardbus audit --follow`` found, one event per finding.

Topic: ``cardbus.audit-findings`` (retained; keyed by the finding's record, ``topic/partition``).
The auditor is its only writer (its one WRITE grant); the operator reads it. Unsealed: the
auditor holds no identity key; the ACL is what says who wrote it, and every finding names the
record it is about, so anyone can check it by auditing that record again. ``finding_id`` is a
digest of (namespace, kind, record): a finding re-published after a restart has the same id.
Reasons never carry a PAN, a PIN or a key (the audit's messages name records, ids and codes).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from schemas.base import Event, UtcDatetime
from schemas.values import Count, Sha256Hex

FindingKind = Annotated[str, StringConstraints(pattern=r"^[a-z]{1,32}$")]
AuditedTopic = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-]{1,249}$")]


class AuditFindingReported(Event):
    """One thing the audit found wrong, at one record of the audited namespace."""

    SEALED_BY: ClassVar[str] = ""

    type: Literal["AuditFindingReported"] = "AuditFindingReported"
    schema_version: Literal[1] = 1

    finding_id: Sha256Hex
    kind: FindingKind
    topic: AuditedTopic
    partition: Count
    offset: Count
    record_time: UtcDatetime
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
