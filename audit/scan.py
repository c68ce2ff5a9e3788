"""The per-record pass: decode, hygiene, seal, and the fact the cross-topic checks need.

Pure (no Kafka): a chunk of records of one partition in, facts and findings out. The engine runs
chunks in worker processes, so this module keeps no state but the key book it is given.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import rfc8785
from pydantic import TypeAdapter

from audit.history import may_revoke
from audit.keys import KeyBook, NotCheckable
from audit.model import DECODE, HYGIENE, SEAL, Fact, Finding, Record
from cardbus.errors import CardBusError, CryptoError, DecodeError
from schemas.base import Event, canonical_bytes, compact_sorted_json, contains_clear_pan
from streams import codec
from streams.topics import NAMESPACE, STATIC_TOPICS, provider_requests_spec

_PROVIDER_SUFFIX = re.compile(r"^provider\.([a-z0-9][a-z0-9\-]{0,31})\.requests$")
_STATIC = {spec.name[len(NAMESPACE) + 1:]: spec for spec in STATIC_TOPICS}

SENSITIVE_FIELDS = frozenset({
    "pan", "clear_pan", "pin", "pin_value", "clear_pin", "cvv", "cvc", "cvv2", "track1",
    "track2", "track_data", "private_key", "secret_key", "clear_key", "key_material",
    "icc_master_key", "card_private_key", "kbpk", "storage_key"})
"""Field names that must never appear in a payload (whatever their value)."""

_OPAQUE = re.compile(r"^(?:[0-9A-F]{20,}|[0-9a-f]{20,})$")  # long hex: bytes, not text
CRYPTOGRAM_FIELDS = frozenset({
    "arqc", "arpc", "mac1", "mac2", "tac", "cdol_data", "pin_block", "unpredictable_number",
    "atr", "prev_hash", "kcv", "value", "ct", "nonce", "epk", "key_block", "card_random",
    "original_sha256", "card_certificate"})
"""Fields holding cryptograms or ciphertext (hex/base64): random digits there are no PAN."""


@lru_cache(maxsize=256)
def topic_types(suffix: str) -> tuple[TypeAdapter[Any], frozenset[str]] | None:
    """(union adapter, allowed type tags) of a topic by its name without the namespace."""
    spec = _STATIC.get(suffix)
    if spec is None:
        match = _PROVIDER_SUFFIX.match(suffix)
        if match is None:
            return None
        spec = provider_requests_spec(match.group(1))
    return spec.adapter, frozenset(spec.value_types)


def provider_of(suffix: str) -> str | None:
    """The provider id of a provider request topic (``provider.<id>.requests``), else None."""
    match = _PROVIDER_SUFFIX.match(suffix)
    return match.group(1) if match else None


def decode_record(rec: Record) -> tuple[Event, dict[str, Any]]:
    """Decode a record with its topic's union (``DecodeError`` if it does not fit)."""
    types = topic_types(rec.topic)
    if types is None:
        raise DecodeError(f"topic {rec.topic} is not in the catalogue")
    adapter, allowed = types
    event, raw = codec.decode_raw(adapter, rec.value)
    if event.type not in allowed:
        raise DecodeError(f"type: {event.type} does not belong on {rec.topic}", field="type")
    return event, raw


def canonical(event: Event, raw: dict[str, Any]) -> bytes:
    """The bytes the seal covers: the event's canonical form as it was sealed (an upcast event
    was sealed in its original version, so its original JSON)."""
    if raw.get("schema_version") != event.schema_version:
        return rfc8785.dumps({k: v for k, v in raw.items() if k != "seal"})
    return canonical_bytes(event)


fast_canonical = compact_sorted_json  # RFC 8785 for float-free JSON (see schemas.base)


def hygiene(rec: Record, raw: dict[str, Any] | None, event: Event | None = None) -> list[str]:
    """Reasons this record exposes a clear PAN, PIN or key (payload, key, headers).

    With ``event`` (what ``raw`` decoded to, without an upcast) whose schema admits no key
    but its own non-sensitive field names (``closed_schema``), no payload key can be a
    sensitive one, so only the values are searched."""
    problems: list[str] = []
    if rec.key and has_pan_bytes(rec.key):
        problems.append("record key holds a clear PAN")
    for name, value in rec.headers:
        if name.lower() in SENSITIVE_FIELDS:
            problems.append(f"header {name!r} is a sensitive field")
        if value and has_pan_bytes(value):
            problems.append(f"header {name!r} holds a clear PAN")
    if raw is not None:
        keys_closed = (event is not None and raw.get("schema_version") == event.schema_version
                       and closed_schema(type(event)))
        if rec.value is not None and (
                (not keys_closed and has_sensitive_key(rec.value)) or has_pan_bytes(rec.value)):
            _walk(raw, "", problems)  # something may be there: find which field, if any
    elif rec.value and has_pan_bytes(rec.value):
        problems.append("undecodable payload holds a clear PAN")
    return problems


_DIGIT_MARKS = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))  # digit -> 0, else x
_SHORTEST_RUN = b"0" * 13


def has_pan_bytes(data: bytes) -> bool:
    """``contains_clear_pan`` on raw bytes, faster: a maximal run of 13-19 digits that passes
    the Luhn check. The bytes are mapped to digit/other marks in C and the runs found with
    ``bytes.find`` (~1.7 us for a 900-byte payload; a regex scan took 6-15 us); the first 13
    digits found after a non-digit start a maximal run."""
    marks = data.translate(_DIGIT_MARKS)
    start = marks.find(_SHORTEST_RUN)
    while start >= 0:
        end = marks.find(b"x", start)
        if end < 0:
            end = len(marks)
        if end - start <= 19 and luhn_bytes(data[start:end]):
            return True
        start = marks.find(_SHORTEST_RUN, end)
    return False


_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def luhn_bytes(run: bytes) -> bool:
    """``luhn_ok`` on ASCII digits, in C: the digits in odd places from the right as they are,
    the others doubled (digit sum) through a translation table."""
    kept, doubled = run[-1::-2], run[-2::-2].translate(_DOUBLED)
    return (sum(kept) - 48 * len(kept) + sum(doubled)) % 10 == 0


def _walk(node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key.lower() in SENSITIVE_FIELDS and value not in (None, ""):
                problems.append(f"{here}: a field named {key!r} must never be on the bus")
            if key not in CRYPTOGRAM_FIELDS:
                _walk(value, here, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]", problems)
    elif isinstance(node, str) and not _OPAQUE.match(node) and contains_clear_pan(node):
        problems.append(f"{path}: holds a clear PAN")


@lru_cache(maxsize=256)
def closed_schema(model: type[Event]) -> bool:
    """Whether a valid payload of ``model`` can only hold keys its schema names, none of them
    a sensitive field: every object in its JSON schema is closed (``extra="forbid"``: no
    ``additionalProperties``), nothing in it may be any JSON (an ``Any`` field), and no field
    has an alias (a payload could then use either name)."""
    schema = model.model_json_schema()
    return schema == model.model_json_schema(by_alias=False) and _closed(schema)


_TYPED = frozenset({"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"})


def _closed(node: Any) -> bool:
    if isinstance(node, list):
        return all(_closed(v) for v in node)
    if not isinstance(node, dict):
        return True
    if "$defs" in node and not all(_closed(v) for v in node["$defs"].values()):
        return False
    properties = node.get("properties")
    if properties is not None or node.get("type") == "object":
        if node.get("additionalProperties", True) is not False or "patternProperties" in node:
            return False
        if any(name.lower() in SENSITIVE_FIELDS for name in properties or {}):
            return False
        return all(_closed(v) for v in (properties or {}).values())
    if not _TYPED & node.keys():
        return False  # no constraint: any JSON, objects with any keys included
    return all(_closed(v) for k, v in node.items() if k in ("anyOf", "oneOf", "allOf", "items",
                                                             "prefixItems"))


_SENSITIVE_KEY = re.compile(rb"\"(?:" + b"|".join(
    re.escape(n.encode()) for n in sorted(SENSITIVE_FIELDS)) + rb")\"\s*:")


def has_sensitive_key(data: bytes) -> bool:
    """A sensitive field name used as a key somewhere in the bytes, in any case: worth a full
    walk. (A case-sensitive search of the lowered bytes: 3x faster than ``re.IGNORECASE``.)"""
    return _SENSITIVE_KEY.search(data.lower()) is not None


DEFERRED_TYPES = frozenset({"AuthorizationRequested", "ReversalRequested"})
"""Platform requests on a provider topic: the re-derivation verifies their signature anyway
(the provider's first check), so the scan leaves it to it instead of verifying twice."""

OUTPUT_TYPES = frozenset({"AuthorizationDecided", "ReversalCompleted", "SettlementBatchClosed"})
"""A provider's outputs that the re-derivation rebuilds, seal included (Ed25519 signatures are
deterministic): one byte-identical to its re-derivation is proven; only the others are verified
(``audit.engine``)."""


@dataclass
class ChunkResult:
    """What one chunk of records gave."""

    facts: list[Fact] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    not_checked: Counter[str] = field(default_factory=Counter)


def scan(records: list[Record], book: KeyBook, *,
         derived: dict[str, tuple[Event, str | None]] | None = None,
         out: ChunkResult | None = None) -> ChunkResult:
    """Decode, hygiene-check and seal-check ``records``; collect their facts (into ``out``).

    ``derived``: the re-derived provider outputs by the SHA-256 hex of their bytes, with their
    decision hash (``audit.rederive.replay_partition``). A recorded output with the very same
    bytes is that event: it is not decoded again (``scan_derived``)."""
    out = out if out is not None else ChunkResult()
    for rec in records:
        if derived:
            digest = hashlib.sha256(rec.value or b"").hexdigest()
            known = derived.get(digest)
            if known is not None and scan_derived(rec, known[0], known[1], digest, book, out):
                continue
        scan_record(rec, book, out)
    return out


def scan_record(rec: Record, book: KeyBook, out: ChunkResult) -> Event | None:
    """The per-record checks of one record (findings, counts and its fact into ``out``); the
    decoded event (None if it does not decode), for a caller that needs it too (the
    re-derivation: each provider request is decoded once)."""
    def find(kind: str, reason: str) -> None:
        out.findings.append(Finding(kind, rec.topic, rec.partition, rec.offset, reason))

    try:
        event, raw = decode_record(rec)
    except DecodeError as exc:
        find(DECODE, exc.reason if hasattr(exc, "reason") else str(exc))
        for problem in hygiene(rec, None):
            find(HYGIENE, problem)
        return None
    for problem in hygiene(rec, raw, event):
        find(HYGIENE, problem)
    _check_key_time(rec, event, book, out)
    if event.type == "KeyRevoked" and not may_revoke(event.producer, raw["key_id"]):
        find(SEAL, f"KeyRevoked {event.event_id}: {event.producer} may not revoke "
                   f"{raw['key_id']} (only the platform or the key's owner)")
    if rec.topic in book.deferred and event.type in DEFERRED_TYPES:
        out.checks["deferred to the re-derivation"] += 1
        out.facts.append(fact_of(rec, event, b""))  # a request's fact needs no canonical
        return event
    data = canonical(event, raw)
    if event.type in OUTPUT_TYPES and event.producer in book.deferred_producers:
        out.facts.append(fact_of(rec, event, data, seal_deferred=True))
        return event
    try:
        kind = book.check(event, data)
        out.checks[kind] += 1
    except NotCheckable as exc:
        out.not_checked[str(exc)] += 1
    except CryptoError as exc:
        find(SEAL, f"{event.type} {event.event_id}: {exc}")
    except CardBusError as exc:  # a key store that cannot open a record, ...
        find(SEAL, f"{event.type} {event.event_id}: {exc}")
    out.facts.append(fact_of(rec, event, data))
    return event


def _check_key_time(rec: Record, event: Event, book: KeyBook, out: ChunkResult) -> None:
    if book.history and event.seal is not None:
        out.checks["seals checked against the key history"] += 1
        late = book.history.problem(event.seal.key_id, rec.timestamp_ms, event.type)
        if late is not None:
            out.findings.append(Finding(SEAL, rec.topic, rec.partition, rec.offset,
                                        f"{event.type} {event.event_id}: {late}"))


def scan_derived(rec: Record, event: Event, decision_hash: str | None, digest: str,
                 book: KeyBook, out: ChunkResult) -> bool:
    """``scan_record`` for a recorded provider output whose bytes (SHA-256 ``digest``) are those
    of the re-derived ``event``: decoding them would give ``event`` again, so the fact comes
    from it. Only for what needs no more than the bytes: a deferred seal (settled by the
    byte-identical re-derivation in ``audit.engine``) and bytes with nothing a hygiene walk
    would look at (no key, header, PAN-like digits or sensitive field name); False (nothing
    done) otherwise, and the caller scans the record the ordinary way."""
    value = rec.value or b""
    if (event.type not in OUTPUT_TYPES or event.producer not in book.deferred_producers
            or rec.headers or (rec.key and has_pan_bytes(rec.key)) or has_pan_bytes(value)
            or (not closed_schema(type(event)) and has_sensitive_key(value))):
        return False
    _check_key_time(rec, event, book, out)
    out.checks["provider outputs identical to their re-derivation (not decoded)"] += 1
    out.facts.append(fact_of(rec, event, b"", seal_deferred=True, digest=digest,
                             decision_hash=decision_hash))
    return True


def fact_of(rec: Record, event: Event, canonical_bytes: bytes, *,
            seal_deferred: bool = False, digest: str | None = None,
            decision_hash: str | None = None) -> Fact:
    """The fact of one decoded event (``digest``: SHA-256 hex of the record's value, and
    ``decision_hash``: of a decision's canonical bytes, when the caller has them already)."""
    e: Any = event
    d: dict[str, Any] = {}
    t = event.type
    if t in ("PaymentRequested", "AuthorizationRequested"):
        d = {"terminal_id": e.terminal_id, "purpose": e.purpose, "pan_token": e.card.pan_token,
             "atc": e.card.atc, "arqc": e.card.arqc, "amount": e.amount.amount,
             "currency": e.amount.currency}
        if t == "AuthorizationRequested":
            d |= {"provider_id": e.provider_id, "request_event_id": e.request_event_id}
    elif t == "AuthorizationDecided":
        d = {"provider_id": e.provider_id, "request_event_id": e.request_event_id,
             "chain_id": e.chain_id, "sequence": e.sequence, "prev_hash": e.prev_hash,
             "hash": decision_hash or hashlib.sha256(
                 canonical_bytes or event.canonical_bytes()).hexdigest().upper(),
             "approved": e.approved, "code": e.response_code, "amount": e.amount.amount,
             "currency": e.amount.currency, "pan_token": e.pan_token}
    elif t == "PaymentCompleted":
        d = {"code": e.response_code, "approved": e.approved, "provider_id": e.provider_id,
             "terminal_id": e.terminal_id}
    elif t == "PaymentCancelled":
        d = {"terminal_id": e.terminal_id, "request_event_id": e.request_event_id,
             "reason": e.reason}
    elif t == "ReversalRequested":
        d = {"provider_id": e.provider_id, "original_event_id": e.original_event_id,
             "reason": e.reason}
    elif t == "ReversalCompleted":
        d = {"provider_id": e.provider_id, "original_event_id": e.original_event_id,
             "reversed": e.reversed, "code": e.response_code}
    elif t == "SettlementBatchClosed":
        d = {"provider_id": e.provider_id, "batch_id": e.batch_id,
             "first_sequence": e.first_sequence, "last_sequence": e.last_sequence,
             "declined_count": e.declined_count,
             "totals": {x.currency: (x.approved_count, x.approved_amount) for x in e.totals}}
    elif t == "EventDeadLettered":
        d = {"original_topic": e.original_topic, "original_partition": e.original_partition,
             "original_offset": e.original_offset, "reason": e.reason,
             "error_code": e.error_code}
    elif t.startswith("TransitLoad"):
        d = {"operator_id": e.operator_id,
             "request_event_id": getattr(e, "request_event_id", e.event_id),
             "confirmed": getattr(e, "confirmed", None)}
    elif t in ("ProviderRegistered", "CardIssued", "SettlementCutoverRequested"):
        d = {"provider_id": e.provider_id}
    if digest is None:
        digest = hashlib.sha256(rec.value or b"").hexdigest()
    return Fact(rec.topic, rec.partition, rec.offset, rec.timestamp_ms, t, event.event_id,
                event.correlation_id, digest, d, seal_deferred)
