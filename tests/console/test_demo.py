"""The main job as a new user runs it: `cardbus demo` end to end on the real broker and pcscd,
then `cardbus audit` over its own trail: every step as expected, and zero findings (the demo's
top-up included: no clear transit card number, every forwarded answer sealed by its
producer)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker, pytest.mark.pcsc, pytest.mark.slow]


def _cardbus(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_demo_runs_every_step_and_its_trail_audits_clean(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    namespace = f"cbdemo-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CARDBUS_HOME": str(tmp_path), "CARDBUS_NAMESPACE": namespace,
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONUNBUFFERED": "1"}
    demo = _cardbus(env, "demo", timeout=600)
    logs = "\n".join(p.read_text(errors="replace")[-3000:]
                     for p in sorted((tmp_path / "logs").glob("*.log")))
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:] + logs
    assert "demo: all steps behaved as expected" in demo.stdout
    assert '{"' not in demo.stdout, "raw JSON log lines in the demo's output"
    audit = _cardbus(env, "audit", "--namespace", namespace, "--home", str(tmp_path),
                     "--json", "--workers", "1", timeout=300)
    report = json.loads(audit.stdout)
    assert report["findings"] == [] and report["ok"] is True, report["findings"]
    assert audit.returncode == 0
    assert report["counts"]["per_type"].get("TransitLoadConfirmed", 0) >= 1
    checks = report["counts"]["checks"]  # the platform's outputs re-derived, every payment's
    assert not [n for n in report["notes"] if "platform outputs not re-derived" in n]
    assert checks.get("payments re-derived", 0) + checks.get(
        "payments re-derived in another order of their topics", 0) >= 2, (checks,
                                                                          report["notes"])
    purses = [json.loads(f.read_text()) for f in (tmp_path / "cards").glob("*.json")
              if not f.name.endswith(".state.json")]
    numbers = [p["pan"] for p in purses if p["kind"] == "transit"]
    assert numbers, "the demo issued no transit card"
    seen = asyncio.run(_scan(kafka_bootstrap, namespace, [n.encode() for n in numbers]))
    assert seen["records"] > 50 and seen["changelogs"] >= 4
    assert seen["hits"] == [], f"the transit card number in clear: {seen['hits']}"


async def _scan(bootstrap: str, namespace: str, needles: list[bytes]) -> dict[str, Any]:
    """Every record (key and value) of every topic and changelog of ``namespace``."""
    from aiokafka import TopicPartition

    from streams import clients

    admin = clients.admin(bootstrap)
    consumer = clients.consumer(bootstrap, party="operator")  # another namespace's topics
    await admin.start()
    await consumer.start()
    try:
        topics = [t for t in await admin.list_topics()
                  if t.startswith((f"{namespace}.", f"{namespace}-"))]
        tps = [TopicPartition(d["topic"], part["partition"])
               for d in await admin.describe_topics(topics) for part in d["partitions"]]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        hits, records = [], 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, msgs in batch.items():
                for m in msgs:
                    records += 1
                    blob = (m.key or b"") + b"|" + (m.value or b"")
                    if any(n in blob for n in needles):
                        hits.append(f"{tp.topic}/{tp.partition}@{m.offset}")
        return {"records": records, "hits": hits,
                "changelogs": sum(1 for t in topics if t.endswith("-changelog"))}
    finally:
        await consumer.stop()
        await admin.close()
