"""``cardbus topics create`` against a real broker: idempotent, and drift is reported."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cardbus.errors import BrokerError
from console.cli import main
from streams.admin import ensure_topics, with_prefix
from streams.topics import NAMESPACE, TopicSettings, catalogue, topic_spec
from tests.kafka_auth import operator

pytestmark = pytest.mark.broker


async def _delete_prefixed(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(**operator(bootstrap), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
def prefix(kafka_bootstrap: str, unique_name: str) -> object:
    yield unique_name
    asyncio.run(_delete_prefixed(kafka_bootstrap, unique_name))


def test_create_twice_second_run_changes_nothing(kafka_bootstrap: str, prefix: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["topics", "create", "--bootstrap", kafka_bootstrap, "--providers", "bank-a",
            "--prefix", prefix]
    assert main(argv) == 0
    first = capsys.readouterr().out
    total = len(catalogue(["bank-a"], with_changelogs=True))
    assert f"{total} topics at {kafka_bootstrap}: {total} created, 0 ok, 0 drifted" in first
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert f"{total} created" not in second
    assert f"0 created, {total} ok, 0 drifted" in second


async def test_drift_in_partitions_and_config_is_reported(kafka_bootstrap: str,
                                                          prefix: str) -> None:
    taps, keys = with_prefix([topic_spec(f"{NAMESPACE}.taps"), topic_spec(f"{NAMESPACE}.terminal-keys")],
                             prefix)
    admin = AIOKafkaAdminClient(**operator(kafka_bootstrap), bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # someone made these by hand: too few partitions, default (7-day, delete) config
        await admin.create_topics([NewTopic(taps.name, 2, 1), NewTopic(keys.name, 3, 1)])
    finally:
        await admin.close()
    report = await ensure_topics(kafka_bootstrap, [taps, keys])
    assert not report.ok
    by_name = {t.name: t for t in report.topics}
    taps_problems = " ".join(by_name[taps.name].problems)
    assert "partitions: broker has 2, catalogue wants 6" in taps_problems
    assert "retention.ms" in taps_problems
    keys_state = by_name[keys.name]
    assert keys_state.status == "drift"
    assert keys_state.problems == (
        "cleanup.policy: broker has delete, catalogue wants compact",
        # issue 22: a topic with the producer's time is drift (the catalogue wants the broker's)
        "message.timestamp.type: broker has CreateTime, catalogue wants LogAppendTime")


async def test_settings_drift_after_creation(kafka_bootstrap: str, prefix: str) -> None:
    spec = with_prefix([topic_spec(f"{NAMESPACE}.settlements")], prefix)
    created = await ensure_topics(kafka_bootstrap, spec)
    assert [t.status for t in created.topics] == ["created"]
    longer = TopicSettings(retention_days=800)
    report = await ensure_topics(kafka_bootstrap, spec, longer)
    assert report.topics[0].status == "drift"
    assert "retention.ms" in report.topics[0].problems[0]


def test_cli_exit_code_3_on_drift(kafka_bootstrap: str, prefix: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = ["topics", "create", "--bootstrap", kafka_bootstrap, "--prefix", prefix]
    assert main(base) == 0
    assert main([*base, "--retention-days", "900"]) == 3
    assert "drift is reported, not fixed" in capsys.readouterr().out


async def test_unreachable_broker_is_one_clear_error() -> None:
    with pytest.raises(BrokerError, match="cannot reach Kafka"):
        await ensure_topics("127.0.0.1:1", with_prefix([topic_spec(f"{NAMESPACE}.taps")], "x"),
                            timeout_ms=2000)
