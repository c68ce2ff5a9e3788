"""Issue 22, finding 6: "now" is the broker's clock on every event topic (LogAppendTime), set
by ``cardbus topics create`` and reported as drift where a topic has the producer's time."""

from __future__ import annotations

from streams.admin import _compare
from streams.topics import PAYMENT_REQUESTS, STATIC_TOPICS, TopicSettings, catalogue


def test_every_event_topic_stamps_records_with_the_broker_clock() -> None:
    for spec in catalogue(["bank-a", "transit"]):
        assert spec.config()["message.timestamp.type"] == "LogAppendTime", spec.name
    (changelog, *_) = [s for s in catalogue(["bank-a"], with_changelogs=True) if not s.values]
    assert "message.timestamp.type" not in changelog.config()
    assert PAYMENT_REQUESTS in STATIC_TOPICS


def test_a_topic_with_producer_time_is_drift() -> None:
    settings = TopicSettings()
    described = {"partitions": [{"replicas": [1]}] * PAYMENT_REQUESTS.partitions}
    config = {**PAYMENT_REQUESTS.config(settings), "message.timestamp.type": "CreateTime"}
    assert _compare(PAYMENT_REQUESTS, settings, described, config) == [
        "message.timestamp.type: broker has CreateTime, catalogue wants LogAppendTime"]
    good = PAYMENT_REQUESTS.config(settings)
    assert _compare(PAYMENT_REQUESTS, settings, described, good) == []
