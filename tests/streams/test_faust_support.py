"""The patches CardBus puts on Faust's aiokafka driver (``streams.faust_support``)."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.faust_support import FETCH_MAX_WAIT_MS, patch_faust_clients


def _fresh_patch(monkeypatch: Any) -> None:
    """Let ``patch_faust_clients`` patch again; everything it touches is put back after."""
    monkeypatch.setattr("streams.faust_support._patched", False)
    monkeypatch.setattr(faust_aiokafka.Producer, "_settings_extra",
                        faust_aiokafka.Producer._settings_extra)
    thread = faust_aiokafka.AIOKafkaConsumerThread
    monkeypatch.setattr(thread, "_commit", thread._commit)
    monkeypatch.setattr(thread, "_create_worker_consumer", thread._create_worker_consumer)


class _Thread:
    """Just what the patched methods touch of an ``AIOKafkaConsumerThread``."""

    def __init__(self, assigned: set[str]) -> None:
        self.assigned = assigned

    def assignment(self) -> set[str]:
        return self.assigned


def test_a_commit_of_partitions_no_longer_held_commits_nothing(monkeypatch: Any) -> None:
    calls: list[Any] = []

    async def original(self: Any, offsets: Any) -> bool:
        calls.append(offsets)
        return True

    _fresh_patch(monkeypatch)
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_commit", original)
    patch_faust_clients()
    commit = faust_aiokafka.AIOKafkaConsumerThread._commit
    # revoked during the rebalance: aiokafka 0.14 would get {} and raise ValueError
    assert asyncio.run(commit(_Thread({"b"}), {"a": 5})) is False
    assert calls == []
    assert asyncio.run(commit(_Thread({"a", "b"}), {"a": 5})) is True
    assert calls == [{"a": 5}]


def test_worker_consumers_fetch_with_a_short_wait(monkeypatch: Any) -> None:
    class Consumer:
        _fetch_max_wait_ms = 1500  # what Faust asks for

    _fresh_patch(monkeypatch)
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer",
                        lambda self, transport: Consumer())
    patch_faust_clients()
    made = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer(object(), None)
    assert made._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 10
