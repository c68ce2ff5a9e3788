"""Auditing a running CardBus (real platform and bank workers on the real broker): a real
workload audits clean, and the audit moves none of the system's consumer-group offsets and
writes none of its tables."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cardbus import ceremony
from cardbus.response_codes import APPROVED, INCORRECT_PIN, INSUFFICIENT_FUNDS
from console.cli import main
from schemas.ledger import SettlementCutoverRequested
from streams.topics import NAMESPACE, provider_requests_topic
from tests.integration import conftest as integration
from tests.integration.system import System, Till, now, publish
from tests.kafka_auth import operator

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# the running system's fixtures (``system`` moves to tests/conftest.py; take it from here
# while it is still here)
till = integration.till
if hasattr(integration, "system"):
    system = integration.system


async def group_offsets(bootstrap: str) -> dict[str, dict[tuple[str, int], int]]:
    admin = AIOKafkaAdminClient(**operator(bootstrap), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        out = {}
        for group, *_ in await admin.list_consumer_groups():
            if group.startswith(NAMESPACE):
                offsets = await admin.list_consumer_group_offsets(group)
                out[group] = {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}
        return out
    finally:
        await admin.close()


async def changelog_ends(bootstrap: str) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(**operator(bootstrap), bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in cluster.topics()
               if t.startswith(NAMESPACE) and t.endswith("-changelog")
               for p in cluster.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def workload(system: System, till: Till) -> None:
    cards = [await system.issue(p, balance=20_000, pin="2468") for p in ("bank-a", "bank-b")
             for _ in range(3)]
    codes: list[str] = []
    for i in range(24):
        card = cards[i % len(cards)]
        pin = "1111" if i % 7 == 3 else "2468"
        amount = 30_000 if i % 5 == 4 else 100 + i
        done, _, _ = await till.pay(card, amount, pin=pin)
        codes.append(done.response_code)
    assert {APPROVED, INCORRECT_PIN, INSUFFICIENT_FUNDS} <= set(codes), codes
    for pid in ("bank-a", "bank-b"):  # cut-over: one signed command per partition
        hsm = ceremony.provider_hsm(pid, system.home)
        for p in range(6):
            ev = hsm.sign_event(SettlementCutoverRequested(
                event_id=secrets.token_hex(16), correlation_id="B1", occurred_at=now(),
                producer=f"provider:{pid}", provider_id=pid, batch_id="B1"))
            await publish(system.bootstrap, provider_requests_topic(pid), None, ev, partition=p)
    await asyncio.sleep(3)


def audit_json(system: System, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["audit", "--namespace", NAMESPACE, "--bootstrap", system.bootstrap,
                 "--home", str(system.home), "--json"])
    return code, json.loads(capsys.readouterr().out)


async def test_running_system_audits_clean_and_undisturbed(
        system: System, till: Till, capsys: pytest.CaptureFixture[str]) -> None:
    await workload(system, till)
    groups_before = await group_offsets(system.bootstrap)
    tables_before = await changelog_ends(system.bootstrap)
    assert groups_before and tables_before
    code, report = await asyncio.to_thread(audit_json, system, capsys)
    groups_after = await group_offsets(system.bootstrap)
    tables_after = await changelog_ends(system.bootstrap)

    assert report["findings"] == [], (report["findings"][:5], system.logs())
    assert code == 0 and report["ok"]
    assert report["counts"]["checks"]["re-derived outputs matching byte for byte"] >= 24
    assert report["counts"]["checks"]["hmac"] >= 24  # terminal MACs, keys from the changelog
    assert tables_after == tables_before  # the audit wrote no table
    assert not [g for g in groups_after if "-audit-" in g]  # it committed nothing
    assert set(groups_after) == set(groups_before)
    for group, offsets in groups_before.items():
        for tp, offset in offsets.items():
            after = groups_after[group][tp]
            if tp[0].endswith(".payment-requests"):  # the platform's clock ticks keep coming
                assert after >= offset
            else:
                assert after == offset, (group, tp)
