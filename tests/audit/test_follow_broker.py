"""``cardbus audit --follow`` against the real broker: a published trail follows clean; a
tampering published later is found by the resumed follower (printed, and on the findings
topic), and a third run reports nothing again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from audit.live import findings_topic, read_status, state_path
from audit.model import CHAIN, REDERIVE
from bench.trail import Trail
from cardbus import ceremony
from console import exitcodes
from console.cli import main
from schemas.audit import AuditFindingReported
from schemas.payments import AuthorizationDecided
from streams import codec
from streams.topics import AUDIT_FINDINGS
from tests.audit.conftest import pick
from tests.audit.kafka import publish_records
from tests.audit.test_broker import fresh_namespace
from tests.kafka_auth import operator

pytestmark = [pytest.mark.broker]


async def _make_findings_topic(bootstrap: str, ns: str) -> None:
    admin = AIOKafkaAdminClient(**operator(bootstrap), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(findings_topic(ns), AUDIT_FINDINGS.partitions, 1)])
    finally:
        await admin.close()


async def _findings_on_topic(bootstrap: str, ns: str) -> list[AuditFindingReported]:
    consumer = AIOKafkaConsumer(**operator(bootstrap), bootstrap_servers=bootstrap,
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(findings_topic(ns), p) for p in range(AUDIT_FINDINGS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[AuditFindingReported] = []
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                out += [codec.decode(None, m.value) for m in messages]  # type: ignore[misc]
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
        return out
    finally:
        await consumer.stop()


def _follow(bootstrap: str, ns: str, home: Path) -> int:
    return main(["audit", "--follow", "--namespace", ns, "--as", "operator", "--bootstrap",
                 bootstrap, "--home", str(home), "--exit-when-idle", "1", "--json"])


def test_follow_resumes_and_reports_a_tampering_once(
        kafka_bootstrap: str, trail_home: tuple[Trail, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    trail, home = trail_home
    ns = fresh_namespace()
    asyncio.run(publish_records(kafka_bootstrap, ns, trail.records))
    asyncio.run(_make_findings_topic(kafka_bootstrap, ns))

    assert _follow(kafka_bootstrap, ns, home) == exitcodes.OK
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err.strip().splitlines()[-1])["events"] == len(trail.records)
    assert state_path(home, ns).exists()
    status = read_status(home, ns)
    assert status is not None and status["state"] == "stopped" and status["findings"] == 0

    # the bank's key re-signs a recorded decision under a new event id, appended later
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 20)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationDecided)
    copy = ceremony.provider_hsm(ev.provider_id, home).sign_event(
        ev.model_copy(update={"event_id": "f" * 32, "seal": None}))
    last = max(r.offset for r in trail.records if (r.topic, r.partition) ==
               (rec.topic, rec.partition))
    extra = dataclasses.replace(rec, offset=last + 1, value=codec.encode(copy),
                                timestamp_ms=rec.timestamp_ms + 5_000)
    asyncio.run(publish_records(kafka_bootstrap, ns, [extra]))

    assert _follow(kafka_bootstrap, ns, home) == exitcodes.NO  # resumed: one record read
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    where = f"{rec.topic}/{rec.partition}@{last + 1}"
    assert sorted(line.split(" ")[2] for line in lines) == sorted([CHAIN, REDERIVE])
    assert all(f" {where}: " in line for line in lines)
    assert json.loads(err.strip().splitlines()[-1])["events"] == 1
    published = asyncio.run(_findings_on_topic(kafka_bootstrap, ns))
    assert sorted(f.kind for f in published) == sorted([CHAIN, REDERIVE])
    assert {(f.topic, f.partition, f.offset) for f in published} == {
        (f"{ns}.{rec.topic}", rec.partition, last + 1)}

    assert _follow(kafka_bootstrap, ns, home) == exitcodes.OK  # nothing new, nothing again
    assert capsys.readouterr().out == ""
    assert len(asyncio.run(_findings_on_topic(kafka_bootstrap, ns))) == 2
    status = read_status(home, ns)
    assert status is not None and status["findings"] == 2
    assert status["last_finding"].endswith(where)
