"""The patches on Faust's internals (``streams.faust_patches``): each still replaces the source it
was written against, and each does what it says (original and patched side by side, on objects
that carry just what the function touches; no broker)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
from faust.tables import recovery as faust_recovery
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree
from mode import Service
from yarl import URL

from cardbus.errors import BrokerError
from streams import faust_patches as fp


@pytest.fixture
def fresh() -> Iterator[None]:
    """No patch applied during the test; whatever was applied before is applied again after."""
    before = fp.applied()
    fp.undo()
    try:
        yield
    finally:
        fp.undo()
        fp.apply(before)


def test_faust_and_aiokafka_are_the_pinned_versions() -> None:
    assert version("faust-streaming") == fp.FAUST_VERSION
    assert version("aiokafka") == fp.AIOKAFKA_VERSION


@pytest.mark.parametrize("patch", fp.PATCHES, ids=lambda p: p.name)
def test_the_patched_source_is_the_one_the_patch_was_written_for(patch: fp.Patch) -> None:
    # fails when an upgrade changes a patched function: re-read it, re-check the patch, re-pin
    assert fp.source_sha256(fp.original(patch.name)) == patch.source_sha256, (
        f"{patch.owner.__qualname__}.{patch.attr} changed upstream ({patch.upstream})")


def test_apply_once_undo_and_selection(fresh: None) -> None:
    assert fp.applied() == ()
    original = faust_aiokafka.AIOKafkaConsumerThread._commit
    assert fp.apply(["commit_held_only"]) == ("commit_held_only",)
    patched = faust_aiokafka.AIOKafkaConsumerThread._commit
    assert patched is not original
    fp.apply(["commit_held_only"])  # twice: still one layer
    assert faust_aiokafka.AIOKafkaConsumerThread._commit is patched
    assert fp.original("commit_held_only") is original
    fp.undo()
    assert faust_aiokafka.AIOKafkaConsumerThread._commit is original
    assert fp.selected("all") == tuple(fp.BY_NAME) and fp.selected("none") == ()
    assert fp.selected("head_check, flush_all") == ("head_check", "flush_all")
    with pytest.raises(BrokerError, match="unknown patch"):
        fp.selected("head_check,nope")


def patched(name: str) -> Any:
    return fp.BY_NAME[name].make(fp.original(name))


# -- kept from before ----------------------------------------------------------------------------


def test_producers_are_idempotent_with_acks_all() -> None:
    made = fp._idempotent_producer(lambda self: {"acks": 1, "other": True})(object())
    assert made == {"acks": "all", "enable_idempotence": True, "other": True}


def test_worker_consumers_fetch_with_a_short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    class Consumer:
        _fetch_max_wait_ms = 1500  # what Faust asks for
        _fetch_min_bytes = 1

    make = fp._short_fetch_wait(lambda self, transport: Consumer())
    assert make(object(), None)._fetch_max_wait_ms == 10
    monkeypatch.setenv("CARDBUS_FETCH_MAX_WAIT_MS", "25")
    monkeypatch.setenv("CARDBUS_FETCH_MIN_BYTES", "4096")
    made = make(object(), None)
    assert (made._fetch_max_wait_ms, made._fetch_min_bytes) == (25, 4096)


class _Thread:
    def __init__(self, assigned: set[str]) -> None:
        self.assigned = assigned

    def assignment(self) -> set[str]:
        return self.assigned


def test_a_commit_of_partitions_no_longer_held_commits_nothing() -> None:
    calls: list[Any] = []

    async def original(self: Any, offsets: Any) -> bool:
        calls.append(offsets)
        return True

    commit = fp._commit_held_only(original)
    # revoked during the rebalance: aiokafka 0.14 would get {} and raise ValueError
    assert asyncio.run(commit(_Thread({"b"}), {"a": 5})) is False
    assert calls == []
    assert asyncio.run(commit(_Thread({"a", "b"}), {"a": 5})) is True
    assert calls == [{"a": 5}]


# -- offsets ---------------------------------------------------------------------------------------


class _Offsets:
    """What ``Consumer._new_offset`` and ``perform_seek`` touch."""

    def __init__(self, committed: dict[str, int | None], acked: dict[str, list[int]]) -> None:
        self._committed_offset: dict[str, int | None] = defaultdict(lambda: None, committed)
        self._acked: dict[str, list[int]] = defaultdict(list, acked)
        self._acked_index: dict[str, set[int]] = defaultdict(
            set, {tp: set(v) for tp, v in acked.items()})
        self._gap: dict[str, IntervalTree] = defaultdict(IntervalTree)
        self._read_offset: dict[str, int | None] = defaultdict(lambda: None)
        self.positions: dict[str, int] = {}
        self.committed_on_broker: dict[str, int | None] = {}

    async def seek_to_committed(self) -> dict[str, int | None]:
        return dict(self.committed_on_broker)

    async def position(self, tp: str) -> int:
        return self.positions[tp]


def test_a_mark_of_zero_is_a_mark() -> None:
    new_offset = patched("head_check")
    original = fp.original("head_check")
    # committed 0, acknowledged 5..7: records 0..4 never acknowledged
    assert original(_Offsets({"t": 0}, {"t": [5, 6, 7]}), "t") == 8  # committed past them
    assert new_offset(_Offsets({"t": 0}, {"t": [5, 6, 7]}), "t") is None
    assert new_offset(_Offsets({"t": 0}, {"t": [0, 1, 2]}), "t") == 3
    # one past the mark is allowed (a transaction marker at the mark), as before
    assert new_offset(_Offsets({"t": 4}, {"t": [5, 6]}), "t") == 7
    assert new_offset(_Offsets({"t": 4}, {"t": [6, 7]}), "t") is None
    # a gap Faust took as acknowledged fills the run
    state = _Offsets({"t": 10}, {"t": [10, 14]})
    state._gap["t"].addi(11, 14)
    assert new_offset(state, "t") == 15


def test_a_partition_never_committed_gets_its_position_as_mark() -> None:
    a, b, c, z = (TP("t", n) for n in range(4))

    def state() -> _Offsets:
        s = _Offsets({}, {})
        s.committed_on_broker = {a: None, b: 7, z: 0}
        s.positions = {a: 3, c: 0, z: 0}
        return s

    before = state()
    asyncio.run(fp.original("committed_mark")(before))
    assert dict(before._committed_offset) == {b: 7, z: None}  # nothing to check a and z by
    after = state()
    asyncio.run(patched("committed_mark")(after))
    assert dict(after._committed_offset) == {a: 3, b: 7, z: 0}
    assert dict(after._read_offset) == {a: None, b: 7, z: 0}
    # and an acknowledgement past a hole at the head of such a partition is not committed
    after._acked[a] = [5, 6]
    assert patched("head_check")(after, a) is None


class _Span:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


class _Diag:
    def set_flag(self, flag: str) -> None: ...

    def unset_flag(self, flag: str) -> None: ...


class _Revoking(_Offsets):
    """A consumer whose app handler records what the consumer still knew when it ran."""

    def __init__(self) -> None:
        super().__init__({"t": 10}, {"t": [10, 11, 12]})
        self.diag = _Diag()
        self.app = type("App", (), {"_start_span_from_rebalancing": lambda s, n: _Span()})()
        self._active_partitions: set[str] | None = {"t"}
        self._paused_partitions: set[str] = set()
        self.seen_by_handler: list[int] = []

    async def _on_partitions_revoked(self, revoked: set[str]) -> None:
        # stands for the app's handler: waits for the records in flight, then commits
        self._acked["t"].append(13)
        self.seen_by_handler = list(self._acked["t"])


def test_a_revoke_commits_before_it_forgets() -> None:
    original, revoke = fp.original("commit_on_revoke"), patched("commit_on_revoke")
    before = _Revoking()
    asyncio.run(original(before, {"t"}))
    assert before.seen_by_handler == [13]  # 10..12 were forgotten: never committed
    after = _Revoking()
    asyncio.run(revoke(after, {"t"}))
    assert after.seen_by_handler == [10, 11, 12, 13]
    assert "t" not in after._acked and "t" not in after._committed_offset  # forgotten after
    assert after._active_partitions == set()


# -- recovery order -----------------------------------------------------------------------------------


class _Calls(list[str]):
    def rec(self, name: str, result: Any = None) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            self.append(name)
            return result
        return call


def _recovery(calls: _Calls) -> Any:
    async def nothing(*_: Any, **__: Any) -> None:
        return None

    async def seek() -> None:
        calls.append("seek")

    consumer = type("C", (), {})()
    consumer.assignment = lambda: {"src", "changelog"}
    consumer.resume_partitions = calls.rec("resume_partitions")
    consumer.perform_seek = seek
    consumer.resume_flow = calls.rec("resume_flow")
    flow = type("F", (), {"resume": calls.rec("flow_resume(clears queues)"),
                          "clear": calls.rec("clear queues")})()
    app = type("A", (), {})()
    app.consumer, app.flow_control, app.consumer_generation_id = consumer, flow, 1
    app.on_rebalance_complete = type("S", (), {"send": nothing})()
    app.conf = type("Conf", (), {"broker_request_timeout": 5})()
    app._fetcher = type("Fe", (), {"maybe_start": nothing})()
    app.assignor = type("As", (), {"assigned_standbys": lambda s: []})()
    app.on_rebalance_end = lambda: None
    rec = type("R", (), {})()
    rec.app = app
    rec.log = type("L", (), {"info": lambda *a: None, "dev": lambda *a: None,
                             "warning": lambda *a: None})()
    rec._set_recovery_ended = lambda: None
    rec._is_changelog_tp = lambda tp: tp == "changelog"
    rec.completed = asyncio.Event()
    rec.tables = type("T", (), {"values": lambda s: [], "on_actives_ready": lambda s: None,
                                "on_standbys_ready": lambda s: None})()

    async def wait(coro: Any, timeout: Any = None) -> None:
        await coro
    rec._wait = wait
    return rec


def test_recovery_seeks_before_the_stream_partitions_can_deliver() -> None:
    before = _Calls()
    asyncio.run(fp.original("seek_before_resume")(_recovery(before), 1))
    # the race: records fetched between the resume and the seek reach the queues, the clear
    # drops them, and the refetched originals are taken as already read
    assert before.index("resume_partitions") < before.index("seek") < before.index(
        "flow_resume(clears queues)")
    after = _Calls()
    asyncio.run(patched("seek_before_resume")(_recovery(after), 1))
    assert after == ["seek", "clear queues", "resume_partitions", "flow_resume(clears queues)",
                     "resume_flow"]


# -- producer buffer --------------------------------------------------------------------------------


class _Buffer:
    """A ``ProducerBuffer`` whose sender hands one message over every 150 ms."""

    flush_atmost = faust_producer.ProducerBuffer.flush_atmost  # what the original flush calls

    def __init__(self, items: int) -> None:
        self.pending: asyncio.Queue[int] = asyncio.Queue()
        for i in range(items):
            self.pending.put_nowait(i)
        self.message_sent = asyncio.Event()
        self.state = "running"
        self.app = None
        self.sent: list[int] = []

    @property
    def size(self) -> int:
        return self.pending.qsize()

    async def sender(self) -> None:
        while True:
            await asyncio.sleep(0.15)  # slower than the original's 0.1 s patience
            self.sent.append(self.pending.get_nowait())
            self.message_sent.set()


async def _flush(flush: Any, items: int) -> _Buffer:
    buf = _Buffer(items)
    task = asyncio.create_task(buf.sender())
    try:
        await flush(buf)
    finally:
        task.cancel()
    return buf


async def test_flush_waits_for_everything_buffered() -> None:
    before = await _flush(fp.original("flush_all"), 3)
    assert before.sent == [] and before.size == 3  # gave up: a commit would pass them
    after = await _flush(patched("flush_all"), 3)
    assert after.sent == [0, 1, 2]


async def test_flush_raises_when_the_buffer_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "FLUSH_STALL_S", 0.3)
    buf = _Buffer(2)  # nobody sends
    with pytest.raises(fp.ProducerStalledError, match="sent nothing"):
        await patched("flush_all")(buf)


# -- recovery waits -----------------------------------------------------------------------------------


class _Recovering(Service):
    """What ``Recovery._wait`` touches: a service with the rebalance signal."""

    def __init__(self) -> None:
        super().__init__()
        self.signal_recovery_start = asyncio.Event()
        self.waiting_for_leaders = False


async def test_a_recovery_step_that_only_timed_out_is_not_a_stop() -> None:
    async def slow() -> None:
        await asyncio.sleep(0.5)

    with pytest.raises(faust_recovery.ServiceStopped):  # the original: recovery just ends
        await fp.original("recovery_timeout")(_Recovering(), slow(), timeout=0.1)
    with pytest.raises(fp.RecoveryStuckError, match=r"more than 0\.1 s"):
        await patched("recovery_timeout")(_Recovering(), slow(), timeout=0.1)
    waiting = _Recovering()
    waiting.waiting_for_leaders = True  # a step waiting for leaders has the time it needs
    await patched("recovery_timeout")(waiting, slow(), timeout=0.1)
    again = _Recovering()
    again.signal_recovery_start.set()
    with pytest.raises(faust_recovery.RebalanceAgain):
        await patched("recovery_timeout")(again, slow(), timeout=0.1)


async def test_changelog_end_offsets_are_read_once_every_partition_has_a_leader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[tuple[str, int]]] = []
    order: list[str] = []

    async def wait(bootstrap: str, partitions: list[tuple[str, int]], **kw: Any) -> float:
        asked.append(partitions)
        order.append(f"leaders of {bootstrap}")
        return 0.0

    async def build(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        assert self.waiting_for_leaders is False
        order.append("end offsets")

    monkeypatch.setattr(fp, "wait_for_leaders", wait)
    rec = type("R", (), {})()
    rec.app = type("A", (), {})()
    rec.app.conf = type("C", (), {"broker": [URL("kafka://127.0.0.1:1"),
                                             URL("kafka://127.0.0.1:2")]})()
    await fp._leader_wait(build)(rec, None, [TP("c", 0), TP("c", 1)], {}, "active")
    assert order == ["leaders of 127.0.0.1:1,127.0.0.1:2", "end offsets"]
    assert asked == [[("c", 0), ("c", 1)]]


# -- a broker that is down ---------------------------------------------------------------------


async def _failed_update_pauses(update: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses taken by one failed metadata update of a client with no reachable node (what
    aiokafka's sender loop forces again at once while a leader is unknown)."""
    from aiokafka.client import AIOKafkaClient

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=250)
    with monkeypatch.context() as m:
        m.setattr(asyncio, "sleep", sleep)
        assert await update(client, client.cluster, []) is False
    return pauses


async def test_a_failed_metadata_update_waits_its_backoff_before_it_reports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _failed_update_pauses(fp.original("metadata_backoff"), monkeypatch) == []
    assert await _failed_update_pauses(patched("metadata_backoff"), monkeypatch) == [0.25]
