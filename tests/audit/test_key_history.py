"""Key history: each seal is checked against the key valid at its record's time (no broker:
the records are given to the engine; the broker test reads the history topic for real)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from audit.history import KeyHistory
from audit.model import SEAL, Record
from bench.trail import Trail
from cardbus import ceremony
from schemas.base import header
from schemas.keys import KeyRevoked
from streams import codec
from tests.audit.conftest import run

Trailed = tuple[Trail, Path]


def _sealed_with(records: list[Record], key_id: str) -> list[Record]:
    """Every record whose event's seal names ``key_id`` (decoded, not searched as bytes)."""
    out = []
    for rec in records:
        if rec.topic == "key-history" or not rec.value:
            continue
        ev = codec.decode(None, rec.value)
        if ev.seal is not None and ev.seal.key_id == key_id:
            out.append(rec)
    return out


def _revocation(home: Path, key_id: str, owner: str, at_ms: int, *, by: str = "platform"
                ) -> KeyRevoked:
    when = datetime.fromtimestamp(at_ms / 1000, UTC)
    ev = KeyRevoked(**header(by, f"revoke-{key_id}", when), key_id=key_id, owner=owner,
                    revoked_at=when, reason="reported stolen")
    hsm = ceremony.platform_hsm(home) if by == "platform" else ceremony.provider_hsm(
        by.split(":", 1)[1], home)
    return hsm.sign_event(ev)


def _append(records: list[Record], topic: str, key: str, event: object, ts: int) -> list[Record]:
    offset = 1 + max((r.offset for r in records if (r.topic, r.partition) == (topic, 0)),
                     default=-1)
    return [*records, Record(topic, 0, offset, ts, key.encode(), codec.encode(event))]  # type: ignore[arg-type]


def _seal_findings(report) -> set[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    return {f.where() for f in report.findings if f.kind == SEAL}


def test_clean_trail_is_checked_against_its_key_history(trail_home: Trailed) -> None:
    trail, home = trail_home
    report = run(trail.records, home)
    assert report.ok, report.findings[:5]
    assert report.checks["seals checked against the key history"] > 0.9 * report.events_read


def test_terminal_key_used_after_its_revocation_is_a_finding_at_each_such_record(
        trail_home: Trailed) -> None:
    """A stolen terminal MAC key, revoked by the platform: every request it seals afterwards is
    one seal finding at that record, and nothing before the revocation is."""
    trail, home = trail_home
    sealed = _sealed_with(trail.records, "tmk:T-0001.v1")
    assert len(sealed) > 20
    cut = sorted(r.timestamp_ms for r in sealed)[len(sealed) // 2]
    after = {(r.topic, r.partition, r.offset) for r in sealed if r.timestamp_ms >= cut}
    records = _append(trail.records, "key-history", "T-0001",
                      _revocation(home, "tmk:T-0001.v1", "terminal:T-0001", cut), cut)
    report = run(records, home)
    assert _seal_findings(report) == after
    assert all("after its revocation" in f.reason for f in report.findings if f.kind == SEAL)
    assert {f.kind for f in report.findings} == {SEAL}


def test_provider_key_used_before_its_registration_is_a_finding(trail_home: Trailed) -> None:
    """The key history registers bank-b's key later than records it sealed: each of those is a
    finding; the registration itself (proof of possession) is not."""
    trail, home = trail_home
    sealed = _sealed_with(trail.records, "sign:provider:bank-b.v1")
    assert len(sealed) > 20
    born = sorted(r.timestamp_ms for r in sealed)[len(sealed) // 3]
    before = {(r.topic, r.partition, r.offset) for r in sealed if r.timestamp_ms < born
              and b'"type":"ProviderRegistered"' not in (r.value or b"")}
    records = [dataclasses.replace(r, timestamp_ms=born) if r.topic == "key-history"
               and r.key == b"bank-b" else r for r in trail.records]
    report = run(records, home)
    assert before and _seal_findings(report) == before
    assert all("before its registration" in f.reason for f in report.findings)


def test_revocation_by_another_party_is_refused_and_is_itself_a_finding(
        trail_home: Trailed) -> None:
    """bank-a cannot revoke bank-b's key: the revocation has no effect, and its record is one
    seal finding."""
    trail, home = trail_home
    late = max(r.timestamp_ms for r in trail.records)
    first = min(r.timestamp_ms for r in trail.records)
    records = _append(trail.records, "key-history", "bank-b", _revocation(
        home, "sign:provider:bank-b.v1", "provider:bank-b", first, by="provider:bank-a"), late)
    report = run(records, home)
    rec = records[-1]
    assert [f.where() for f in report.findings] == [(rec.topic, rec.partition, rec.offset)]


def test_a_revocation_cannot_be_dated_after_its_record() -> None:
    history = KeyHistory()
    ev = KeyRevoked(**header("platform", "c", datetime(2031, 1, 1, tzinfo=UTC)),
                    key_id="tmk:T-1.v1", owner="terminal:T-1",
                    revoked_at=datetime(2031, 1, 1, tzinfo=UTC), reason="r")
    history.revoke(ev, 1_000, "key-history/0@0")
    assert history.problem("tmk:T-1.v1", 999, "PaymentRequested") is None
    assert history.problem("tmk:T-1.v1", 1_000, "PaymentRequested") is not None


def test_key_history_acls_auditor_reads_owners_write() -> None:
    """Declared next to the topic catalogue: the auditor reads the history and writes nothing;
    the platform, the providers and the terminals write (their own keys: the seals say whose)
    and read nothing of it."""
    from streams.acls import grants_of
    from streams.topics import KEY_HISTORY

    def ops(party: str) -> set[str]:
        return {g.operation for g in grants_of(party, ("bank-a",))
                if g.resource_type == "topic" and g.name == KEY_HISTORY.name}

    assert ops("auditor") == {"READ"}
    for party in ("platform", "provider-bank-a", "terminal"):
        assert "WRITE" in ops(party) and "READ" not in ops(party), party
    assert KEY_HISTORY.cleanup == "delete"  # never compacted: every version is kept
