"""streams.batching: a batch writes each touched key once, under the record that wrote it last;
a failing record's writes and sends are dropped and the rest of the batch goes on; two agents'
batches never see each other's writes; outside a batch a scoped table is the table itself."""

from __future__ import annotations

import asyncio
from typing import Any

import faust.streams
import pytest

from streams.batching import Batches, Overlay, Scoped, ScopedSend
from streams.faust_support import enter_event


class CountingTable(dict[str, Any]):
    """A dict that counts writes (a Faust table sends one changelog record per write)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, Any, Any]] = []
        self.current: Any = None

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append((key, value, self.current))
        super().__setitem__(key, value)


def rig() -> tuple[CountingTable, Scoped, list[tuple[str, Any, Any]], Batches[dict[str, Any]]]:
    table = CountingTable()
    sent: list[tuple[str, Any, Any]] = []

    async def send(topic: str, key: Any, event: Any) -> None:
        sent.append((topic, key, event))

    def enter(record: dict[str, Any] | None) -> None:
        table.current = record["n"] if record is not None else None

    return table, Scoped(table), sent, Batches(send=send, enter=enter)


def test_overlay_reads_its_writes_and_savepoints_drop_or_merge() -> None:
    base = {"a": 1, "b": 2}
    ov: Overlay[str, int] = Overlay(base)
    ov["a"] = 10
    del ov["b"]
    assert ov["a"] == 10 and "b" not in ov and sorted(ov) == ["a"] and base == {"a": 1, "b": 2}
    child = ov.child()
    child["c"] = 3
    assert child["a"] == 10 and "c" not in ov
    child.merge()
    assert ov["c"] == 3
    assert ov.flush() == 3 and base == {"a": 10, "c": 3}


async def test_a_batch_writes_each_key_once_under_its_last_writer() -> None:
    table, scoped, sent, runner = rig()
    send = ScopedSend(runner.send)

    async def handle(record: dict[str, Any]) -> None:
        key = record["key"]
        scoped[key] = (scoped.get(key) or 0) + record["n"]  # read-modify-write within the batch
        await send("out", key, record["n"])

    records = [{"key": "x", "n": 1}, {"key": "y", "n": 2}, {"key": "x", "n": 3}]
    report = await runner.run(records, handle, on_error=_never)
    assert table == {"x": 4, "y": 2}
    assert sorted(table.writes, key=lambda w: w[0]) == [("x", 4, 3), ("y", 2, 2)]
    assert sent == [("out", "x", 1), ("out", "y", 2), ("out", "x", 3)]  # in order, after
    assert (report.records, report.failed, report.keys_written, report.sent) == (3, 0, 2, 3)


async def test_a_failing_record_loses_its_writes_and_sends_not_the_batch() -> None:
    table, scoped, sent, runner = rig()
    send = ScopedSend(runner.send)
    failed: list[tuple[int, str]] = []

    async def handle(record: dict[str, Any]) -> None:
        scoped["total"] = (scoped.get("total") or 0) + record["n"]
        await send("out", None, record["n"])
        if record["n"] == 2:
            raise ValueError("bad record")

    async def on_error(record: dict[str, Any], exc: BaseException) -> None:
        assert table == {"total": 4}  # dead letters go out after the batch's writes
        failed.append((record["n"], str(exc)))

    report = await runner.run([{"n": 1}, {"n": 2}, {"n": 3}], handle, on_error)
    assert table == {"total": 4} and len(table.writes) == 1
    assert sent == [("out", None, 1), ("out", None, 3)]
    assert failed == [(2, "bad record")] and report.failed == 1


async def test_outside_a_batch_the_scoped_table_and_sender_are_the_real_ones() -> None:
    table, scoped, sent, runner = rig()
    scoped["k"] = 1
    await ScopedSend(runner.send)("out", "k", 1)
    assert table.writes == [("k", 1, None)] and sent == [("out", "k", 1)]


async def test_two_agents_batches_do_not_see_each_others_writes() -> None:
    table, scoped, _sent, runner = rig()
    other = Batches(send=runner.send, lock=asyncio.Lock())  # no shared lock: isolation alone
    seen: dict[str, Any] = {}
    inside = asyncio.Event()
    go_on = asyncio.Event()

    async def first(record: dict[str, Any]) -> None:
        scoped["k"] = "first"
        inside.set()
        await go_on.wait()  # the other agent runs its batch meanwhile

    async def second(record: dict[str, Any]) -> None:
        seen["k"] = scoped.get("k")

    one = asyncio.create_task(runner.run([{"n": 1}], first, _never))
    await inside.wait()
    await other.run([{"n": 2}], second, _never)
    go_on.set()
    await one
    assert seen == {"k": None} and table == {"k": "first"}


async def test_one_lock_keeps_a_read_modify_write_whole_across_agents() -> None:
    table, scoped, _sent, runner = rig()
    table["k"] = 0
    go_on = asyncio.Event()

    async def slow_increment(record: dict[str, Any]) -> None:
        value = scoped["k"]
        await go_on.wait()
        scoped["k"] = value + 1

    async def increment(record: dict[str, Any]) -> None:
        scoped["k"] = scoped["k"] + 1

    one = asyncio.create_task(runner.run([{"n": 1}], slow_increment, _never))
    await asyncio.sleep(0)
    two = asyncio.create_task(runner.run([{"n": 2}], increment, _never))
    await asyncio.sleep(0.01)
    go_on.set()
    await asyncio.gather(one, two)
    assert table["k"] == 2  # without the shared lock the second write would be lost (1)


def test_enter_event_sets_fausts_current_event() -> None:
    class Event:
        pass

    ev = Event()
    enter_event(ev)
    try:
        assert faust.streams.current_event() is ev
    finally:
        enter_event(None)
    assert faust.streams.current_event() is None


async def _never(record: Any, exc: BaseException) -> None:
    pytest.fail(f"unexpected failure of {record}: {exc!r}")
