"""Partition-parallel audit: parts over split partitions, merged, give the findings of one
full audit (clean and tampered trails); the parts must cover every partition once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.engine import AuditOptions, audit_partitions, finish
from audit.keys import build_keybook
from audit.model import AuditReport, Record
from audit.partial import Partial, check_cover, load, parse_partitions, save
from bench.trail import Trail
from cardbus.errors import ConfigError
from tests.audit.conftest import pick, replace, run
from tests.audit.test_key_history import _append, _revocation, _sealed_with

Trailed = tuple[Trail, Path]


def part(records: list[Record], home: Path, partitions: str, workers: int = 1) -> Partial:
    opts = AuditOptions("cardbus", home=home, workers=workers,
                        partitions=parse_partitions(partitions))
    return audit_partitions(records, opts, build_keybook(home, []))


def merged(parts: list[Partial], home: Path) -> AuditReport:
    return finish(parts, AuditOptions("cardbus", home=home), build_keybook(home, []))


def same(full: AuditReport, whole: AuditReport) -> None:
    assert whole.findings == full.findings
    assert whole.events_read == full.events_read
    assert whole.per_topic == full.per_topic and whole.per_type == full.per_type
    assert whole.checks == full.checks and whole.not_checked == full.not_checked
    assert whole.ledger == full.ledger and whole.response_codes == full.response_codes


def tampered(trail: Trail, home: Path) -> list[Record]:
    """Several kinds at once, in several partitions: a decision removed, an outcome changed, a
    terminal MAC key revoked half-way, a batch altered."""
    records = list(trail.records)
    records = replace(records, pick(records, "provider-results", "AuthorizationDecided", 17))
    done = pick(records, "terminal-results", "PaymentCompleted", 33)
    raw = json.loads(done.value or b"{}")
    raw["response_code"] = "05"
    records = replace(records, done, value=json.dumps(raw).encode())
    batch = pick(records, "settlements", "SettlementBatchClosed", 1)
    records = replace(records, batch, value=(batch.value or b"").replace(
        b'"declined_count":', b'"declined_count":1'))
    sealed = _sealed_with(records, "tmk:T-0001.v1")
    cut = sorted(r.timestamp_ms for r in sealed)[len(sealed) // 2]
    return _append(records, "key-history", "T-0001",
                   _revocation(home, "tmk:T-0001.v1", "terminal:T-0001", cut), cut)


@pytest.mark.parametrize("split", [("0-2", "3-5"), ("1,3,5", "0,2,4"), ("0", "1-5")])
def test_two_parts_merged_equal_one_full_audit_clean(trail_home: Trailed,
                                                     split: tuple[str, str]) -> None:
    trail, home = trail_home
    full = run(trail.records, home)
    assert full.ok
    parts = [part(trail.records, home, s) for s in split]
    assert all(p.events_read < full.events_read for p in parts)
    same(full, merged(parts, home))


def test_two_parts_merged_equal_one_full_audit_tampered(trail_home: Trailed,
                                                        tmp_path: Path) -> None:
    trail, home = trail_home
    records = tampered(trail, home)
    full = run(records, home)
    assert {f.kind for f in full.findings} >= {"chain", "rederive", "seal", "ledger"}
    for i, spec in enumerate(("0-2", "3-5")):  # through the files, as two hosts would
        save(part(records, home, spec, workers=2), tmp_path / f"part{i}")
    same(full, merged([load(tmp_path / "part1"), load(tmp_path / "part0")], home))


def test_parts_must_cover_every_partition_once(trail_home: Trailed, tmp_path: Path) -> None:
    trail, home = trail_home
    a, b = part(trail.records, home, "0-2"), part(trail.records, home, "2-5")
    with pytest.raises(ConfigError, match="audited twice \\[2\\]"):
        check_cover([a, b])
    with pytest.raises(ConfigError, match="missing \\[3, 4, 5\\]"):
        check_cover([a])
    (tmp_path / "junk").write_bytes(b"not a part")
    with pytest.raises(ConfigError, match="not an audit part"):
        load(tmp_path / "junk")


def test_partition_spec() -> None:
    assert parse_partitions("0-2,5") == {0, 1, 2, 5}
    for bad in ("6", "x", "", "2-9"):
        with pytest.raises(ConfigError):
            parse_partitions(bad)


def test_bench_split_is_balanced_and_agrees_with_one_process(trail_home: Trailed) -> None:
    """`cardbus bench audit --split`: the two parts it runs at once cover every partition, hold
    partition 0 in the first, and their merge agrees with the one-process audit."""
    from bench.audit import balanced_split, split_run

    trail, home = trail_home
    first, second = balanced_split(trail.records)
    check_cover([Partial("cardbus", parse_partitions(first)),
                 Partial("cardbus", parse_partitions(second))])
    assert "0" in first.split(",")
    result = split_run(trail.records, home)
    assert result["split_same_findings"] is True
    assert result["split"] == [first, second]
