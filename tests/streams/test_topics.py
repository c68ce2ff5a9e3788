"""The topic catalogue: names, keys, value types, cleanup and retention, settings, CLI list."""

from __future__ import annotations

import pytest

from cardbus.errors import ConfigError
from console.cli import main
from schemas.registry import ALL_EVENTS, type_name
from streams.topics import (
    DAY_MS,
    NAMESPACE,
    STATIC_TOPICS,
    TopicSettings,
    catalogue,
    provider_requests_spec,
    provider_requests_topic,
    topic_spec,
)

COMPACTED = {f"{NAMESPACE}.providers", f"{NAMESPACE}.provider-admissions",
             f"{NAMESPACE}.provider-keys", f"{NAMESPACE}.terminals",
             f"{NAMESPACE}.terminal-status", f"{NAMESPACE}.terminal-keys",
             f"{NAMESPACE}.card-policies"}


def test_names_are_unique_and_every_event_type_has_a_topic() -> None:
    specs = catalogue(["bank-a", "transit"])
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    carried = {t for s in specs for t in s.value_types}
    assert carried == {type_name(m) for m in ALL_EVENTS}
    for spec in specs:
        assert spec.key and spec.producers and spec.consumers and spec.partitions >= 1


def test_registrations_and_keys_are_compacted_payment_topics_retained_a_year() -> None:
    for spec in STATIC_TOPICS:
        conf = spec.config()
        if spec.name in COMPACTED:
            assert conf["cleanup.policy"] == "compact" and "retention.ms" not in conf
        else:
            assert conf["cleanup.policy"] == "delete"
            assert int(conf["retention.ms"]) >= 365 * DAY_MS
    assert {s.name for s in STATIC_TOPICS if s.cleanup == "compact"} == COMPACTED


def test_settings_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CARDBUS_TOPIC_REPLICATION", "CARDBUS_TOPIC_MIN_ISR", "CARDBUS_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)
    assert TopicSettings.from_env(brokers=1) == TopicSettings(1, 1, 400)
    assert TopicSettings.from_env(brokers=3) == TopicSettings(3, 2, 400)
    monkeypatch.setenv("CARDBUS_TOPIC_REPLICATION", "3")
    monkeypatch.setenv("CARDBUS_TOPIC_MIN_ISR", "2")
    monkeypatch.setenv("CARDBUS_RETENTION_DAYS", "730")
    settings = TopicSettings.from_env()
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    conf = topic_spec(f"{NAMESPACE}.taps").config(settings)
    assert conf["retention.ms"] == str(730 * DAY_MS) and conf["min.insync.replicas"] == "2"
    assert TopicSettings.from_env(retention_days=500, replication_factor=None).retention_days \
        == 500
    monkeypatch.setenv("CARDBUS_RETENTION_DAYS", "30")
    with pytest.raises(ConfigError, match="CARDBUS_RETENTION_DAYS"):
        TopicSettings.from_env()
    monkeypatch.delenv("CARDBUS_RETENTION_DAYS")
    with pytest.raises(ConfigError, match=r"min\.insync"):
        TopicSettings(replication_factor=1, min_insync_replicas=2)
    monkeypatch.setenv("CARDBUS_TOPIC_REPLICATION", "three")
    with pytest.raises(ConfigError, match="CARDBUS_TOPIC_REPLICATION"):
        TopicSettings.from_env()


def test_provider_request_topics_derive_from_the_provider_id() -> None:
    assert provider_requests_topic("bank-a") == f"{NAMESPACE}.provider.bank-a.requests"
    spec = topic_spec(f"{NAMESPACE}.provider.bank-b.requests")
    assert spec == provider_requests_spec("bank-b")
    assert "provider:bank-b" in spec.consumers
    assert "AuthorizationRequested" in spec.value_types
    for bad in ("Bank-A", "bank.a", "", "a" * 40, "../x"):
        with pytest.raises(ConfigError):
            provider_requests_topic(bad)
    with pytest.raises(ConfigError, match="unknown topic"):
        topic_spec(f"{NAMESPACE}.provider.bank-a.results")


def test_catalogue_adds_each_provider_once() -> None:
    names = [s.name for s in catalogue(["bank-a", "bank-a", "transit"])]
    assert names.count(f"{NAMESPACE}.provider.bank-a.requests") == 1
    assert len(names) == len(STATIC_TOPICS) + 2


def test_cli_list_prints_every_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "list", "--providers", "bank-a,transit",
                 "--retention-days", "500"]) == 0
    out = capsys.readouterr().out
    for spec in catalogue(["bank-a", "transit"]):
        assert spec.name in out
    assert "500d" in out and "compact" in out
