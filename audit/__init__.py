"""Audit replay: read a namespace's topics, verify every seal and hash chain, re-derive the
providers' decisions and ledger, check completeness and hygiene, report.

Layers: ``model`` (records, facts, findings, report) -> ``scan`` (per record: decode, hygiene,
seal) -> ``checks`` (cross-topic, pure) and ``rederive`` (provider replay) -> ``engine``
(orchestration, process pool) -> ``reader`` (Kafka, read-only) -> ``report`` (rich, JSON).
"""

from audit.engine import AuditOptions, audit_records
from audit.model import AuditReport, Finding, Record

__all__ = ["AuditOptions", "AuditReport", "Finding", "Record", "audit_records"]
