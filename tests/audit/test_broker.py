"""``cardbus audit`` against the real broker: a published trail audits clean, a rewritten copy
of its topics (one decision removed) does not, and a time-range audit agrees with a full audit
restricted to that range."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from audit.engine import AuditOptions, audit_records
from audit.keys import build_keybook
from audit.model import CHAIN, PLATFORM, REDERIVE, AuditReport, Record
from audit.reader import read_namespace
from bench.trail import Trail
from console import exitcodes
from console.cli import main
from streams import codec
from streams.topics import NAMESPACE
from tests.audit.conftest import pick
from tests.audit.kafka import publish_records, rewrite

pytestmark = [pytest.mark.broker]


def fresh_namespace() -> str:
    return f"{NAMESPACE}-{uuid.uuid4().hex[:6]}"


async def audit(bootstrap: str, ns: str, home: Path, **kw: int) -> tuple[AuditReport, object]:
    cap = await read_namespace(bootstrap, ns, party="operator", start_ms=kw.get("start_ms"),
                               end_ms=kw.get("end_ms"))
    opts = AuditOptions(ns, home=home, workers=1, partial=cap.partial, end_ms=kw.get("end_ms"))
    return audit_records(cap.records, opts, build_keybook(home, cap.key_changelog)), cap


@pytest.fixture(scope="module")
def published(kafka_bootstrap: str, trail_home: tuple[Trail, Path]) -> str:
    import asyncio

    ns = fresh_namespace()
    asyncio.run(publish_records(kafka_bootstrap, ns, trail_home[0].records))
    return ns


async def test_published_trail_audits_clean(kafka_bootstrap: str, published: str,
                                            trail_home: tuple[Trail, Path]) -> None:
    trail, home = trail_home
    report, _ = await audit(kafka_bootstrap, published, home)
    assert report.ok, report.findings[:5]
    assert report.events_read == len(trail.records)


def test_cli_json_and_exit_code(kafka_bootstrap: str, published: str,
                                trail_home: tuple[Trail, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    _, home = trail_home
    code = main(["audit", "--namespace", published, "--as", "operator", "--bootstrap", kafka_bootstrap,
                 "--home", str(home), "--json", "--workers", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] is True and out["findings"] == []
    assert out["events_read"] == len(trail_home[0].records)
    assert out["counts"]["per_topic"]["provider-results"] > 0


async def test_rewritten_partition_without_a_decision_fails(
        kafka_bootstrap: str, trail_home: tuple[Trail, Path]) -> None:
    trail, home = trail_home
    gone = pick(trail.records, "provider-results", "AuthorizationDecided", 60)
    copy = rewrite(trail.records, lambda r: None if r is gone else r)
    ns = fresh_namespace()
    await publish_records(kafka_bootstrap, ns, copy)
    report, _ = await audit(kafka_bootstrap, ns, home)
    assert not report.ok
    kinds = {f.kind for f in report.findings}
    assert {CHAIN, REDERIVE} <= kinds
    chain = next(f for f in report.findings if f.kind == CHAIN)
    assert (chain.topic, chain.partition) == (gone.topic, gone.partition)
    seq = json.loads(gone.value or b"{}")["sequence"]
    assert f"sequence {seq + 1} follows {seq - 1}" in chain.reason
    assert chain.offset >= gone.offset  # the next decision of that chain, renumbered


async def test_time_range_agrees_with_full_replay(kafka_bootstrap: str,
                                                  trail_home: tuple[Trail, Path]) -> None:
    trail, home = trail_home
    altered = pick(trail.records, "provider-results", "AuthorizationDecided", 80)

    def change(rec: Record) -> Record:
        if rec is not altered:
            return rec
        raw = json.loads(rec.value or b"{}")
        raw["response_code"], raw["approved"], raw["auth_code"] = "05", False, None
        return Record(rec.topic, rec.partition, rec.offset, rec.timestamp_ms, rec.key,
                      json.dumps(raw).encode())

    ns = fresh_namespace()
    await publish_records(kafka_bootstrap, ns, rewrite(trail.records, change))
    times = sorted(r.timestamp_ms for r in trail.records)
    start_ms, end_ms = times[len(times) // 4], times[(3 * len(times)) // 4]
    ranged, cap = await audit(kafka_bootstrap, ns, home, start_ms=start_ms, end_ms=end_ms)
    full, _ = await audit(kafka_bootstrap, ns, home)
    assert not full.ok and not ranged.ok

    def inside(f: object) -> bool:
        key = f"{f.topic}/{f.partition}"  # type: ignore[attr-defined]
        lo, hi = cap.start[key], cap.stop[key]  # type: ignore[attr-defined]
        return bool(lo <= f.offset < hi)  # type: ignore[attr-defined]

    # the platform is re-derived only from the beginning (its payments' state starts there)
    assert "platform outputs not re-derived: not with --from (a payment's state begins " \
           "before the range)" in ranged.notes
    expected = [f for f in full.findings if inside(f) and f.kind != PLATFORM]
    assert sorted(ranged.findings, key=str) == sorted(expected, key=str)
    assert ranged.events_read < full.events_read


async def test_key_history_topic_is_read_and_a_revoked_key_is_a_finding(
        kafka_bootstrap: str, trail_home: tuple[Trail, Path]) -> None:
    """The key-history topic, read from the broker: a revocation of a terminal's MAC key makes
    every later request sealed with it a finding (and nothing else)."""
    from tests.audit.test_key_history import _revocation, _sealed_with

    trail, home = trail_home
    sealed = _sealed_with(trail.records, "tmk:T-0000.v1")
    cut = sorted(r.timestamp_ms for r in sealed)[(2 * len(sealed)) // 3]
    revoked = _revocation(home, "tmk:T-0000.v1", "terminal:T-0000", cut)
    history = [r for r in trail.records if r.topic == "key-history" and r.partition == 0]
    extra = Record("key-history", 0, len(history), cut, b"T-0000", codec.encode(revoked))
    ns = fresh_namespace()
    await publish_records(kafka_bootstrap, ns, [*trail.records, extra])
    report, _ = await audit(kafka_bootstrap, ns, home)
    assert report.per_topic["key-history"] == len(
        [r for r in trail.records if r.topic == "key-history"]) + 1
    assert {f.where() for f in report.findings} == {
        (r.topic, r.partition, r.offset) for r in sealed if r.timestamp_ms >= cut}
    assert {f.kind for f in report.findings} == {"seal"}


def test_cli_partitions_parts_merged_equal_the_full_audit(
        kafka_bootstrap: str, trail_home: tuple[Trail, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two `cardbus audit --partitions ... --save` processes read their partitions from the
    broker; `cardbus audit --merge` gives the full audit's report (a tampered trail)."""
    import asyncio

    trail, home = trail_home
    gone = pick(trail.records, "provider-results", "AuthorizationDecided", 50)
    ns = fresh_namespace()
    asyncio.run(publish_records(kafka_bootstrap, ns, rewrite(
        trail.records, lambda r: None if r is gone else r)))
    common = ["audit", "--namespace", ns, "--as", "operator", "--bootstrap", kafka_bootstrap,
              "--home", str(home), "--json", "--workers", "1"]
    assert main(common) == exitcodes.NO
    full = json.loads(capsys.readouterr().out)
    read = []
    for spec, name in (("0-2", "a"), ("3-5", "b")):
        main([*common, "--partitions", spec, "--save", str(tmp_path / name)])
        read.append(json.loads(capsys.readouterr().out)["events_read"])
    assert all(0 < n < full["events_read"] for n in read)
    code = main(["audit", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--home",
                 str(home), "--json"])
    whole = json.loads(capsys.readouterr().out)
    assert code == exitcodes.NO and full["findings"] and whole["findings"] == full["findings"]
    assert whole["events_read"] == full["events_read"] == sum(read)
    assert whole["counts"] == full["counts"]
    assert main(["audit", "--partitions", "0-2", "--namespace", ns]) != exitcodes.OK
    assert "needs --save" in capsys.readouterr().err
