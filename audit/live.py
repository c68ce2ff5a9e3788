"""``cardbus audit --follow`` on Kafka: read as records arrive, audit, report, checkpoint.

Reads every topic of the namespace (as the batch audit does: manual assignment, no consumer
group, ``read_committed``, commits nothing) plus the platform's key-records changelog, from
the checkpoint's offsets (or the beginning), and feeds ``audit.follow.Follower``. Each finding
is printed as one line and published to ``<namespace>.audit-findings`` (the auditor's one write
grant). The checkpoint is a local file under the audit's state folder
(``<home>/audit/follow-<namespace>.state``, 0600): the follower's whole state and the offsets
read, written after the findings up to those offsets are on the findings topic (so a crash
re-reports at most the findings since the last checkpoint, with the same ``finding_id``; a
stop re-reports none). A status file beside it (``.status.json``) says how far behind the
follower is and what it found last: ``cardbus up`` shows it.

The follower's clock (``now_ms``) is the broker time of the slowest partition it is still
reading, or the wall clock once it has read everything there is: catching up on a day of
records does not report a payment as unanswered because its answer is not read yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from audit.follow import Follower, FollowOptions, FollowState, finding_id
from audit.keys import build_keybook
from audit.model import Finding, Record
from audit.reader import keys_changelog
from audit.scan import topic_types
from cardbus.errors import BrokerError, ConfigError
from schemas.audit import AuditFindingReported
from schemas.base import header
from streams import clients, codec
from streams.topics import AUDIT_FINDINGS, NAMESPACE

FORMAT = "cardbus-audit-follow/1"
FINDINGS_SUFFIX = AUDIT_FINDINGS.name[len(NAMESPACE) + 1:]  # "audit-findings"
CHANGELOG = ""  # the key-records changelog's place in the offsets (no topic suffix)


def findings_topic(namespace: str) -> str:
    """``<namespace>.audit-findings``."""
    return f"{namespace}.{FINDINGS_SUFFIX}"


def state_path(home: Path, namespace: str) -> Path:
    """The checkpoint file of the follower of ``namespace``."""
    return home / "audit" / f"follow-{namespace}.state"


def status_path(home: Path, namespace: str) -> Path:
    """The status file of the follower of ``namespace`` (what ``cardbus up`` shows)."""
    return home / "audit" / f"follow-{namespace}.status.json"


def load_state(path: Path) -> FollowState | None:
    """The checkpoint this auditor's own follower wrote (pickle: load only your own file)."""
    if not path.exists():
        return None
    try:
        tag, state = pickle.loads(path.read_bytes())  # noqa: S301 - the follower's own file
    except (OSError, pickle.UnpicklingError, ValueError, EOFError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a follower checkpoint ({exc}); move it away to "
                          f"start from the beginning") from None
    if tag != FORMAT or not isinstance(state, FollowState):
        raise ConfigError(f"{path}: not a follower checkpoint of format {FORMAT}")
    return state


def save_state(state: FollowState, path: Path) -> None:
    """Write the checkpoint atomically (a crash leaves the previous one), owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pickle.dumps((FORMAT, state), protocol=pickle.HIGHEST_PROTOCOL))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_status(home: Path, namespace: str, stale_s: float = 10.0) -> dict[str, Any] | None:
    """The follower's last status, with ``state`` "stopped" when it is older than ``stale_s``
    (the follower writes it every second while it runs); None if it never ran."""
    path = status_path(home, namespace)
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if status.get("state") != "stopped" and time.time() - status.get("updated_at", 0) > stale_s:
        status["state"] = "stopped"
    return status


def finding_line(f: Finding, at_ms: int | None = None) -> str:
    """One line per finding (names records and ids, never card data or keys)."""
    when = datetime.fromtimestamp((at_ms or time.time() * 1000) / 1000, UTC)
    return (f"{when:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f"Z finding {f.kind} "
            f"{f.topic}/{f.partition}@{f.offset}: {f.reason}")


@dataclass
class FollowRun:
    """What a run of the follower did (returned when it stops)."""

    events: int = 0
    findings: int = 0
    seconds: float = 0.0
    behind: int = 0
    delays_ms: list[float] | None = None  # record time -> finding printed, per finding
    caught_up_s: float | None = None  # when everything there was had been read, first
    cpu_s: float = 0.0  # this process's CPU time while following


@dataclass
class LiveOptions:
    """Where and how to follow (``FollowOptions`` plus the Kafka side)."""

    follow: FollowOptions
    bootstrap: str
    party: str = "auditor"
    home: Path | None = None  # where the checkpoint and status live (default: CARDBUS_HOME)
    checkpoint_s: float = 5.0
    exit_when_idle_s: float | None = None  # stop once caught up and idle this long (bench/tests)
    publish: bool = True


async def _partitions(consumer: Any, namespace: str) -> list[TopicPartition]:
    cluster = await consumer._client.fetch_all_metadata()
    prefix, changelog = namespace + ".", keys_changelog(namespace)
    wanted = [t for t in sorted(cluster.topics()) if t == changelog or (
        t.startswith(prefix) and t[len(prefix):] != FINDINGS_SUFFIX
        and topic_types(t[len(prefix):]) is not None)]
    return [TopicPartition(t, p) for t in wanted
            for p in sorted(cluster.partitions_for_topic(t) or ())]


def _suffix(topic: str, namespace: str) -> str:
    return topic[len(namespace) + 1:] if topic.startswith(namespace + ".") else CHANGELOG


async def follow(options: LiveOptions, say: Callable[[str], None] = print,
                 stop: asyncio.Event | None = None,
                 say_status: Callable[[str], None] = lambda _m: None) -> FollowRun:
    """Follow the namespace until ``stop`` is set (or idle, with ``exit_when_idle_s``):
    findings go to ``say``, what the follower is doing to ``say_status``."""
    ns = options.follow.namespace
    home = options.home or options.follow.home
    if home is None:
        from cardbus.paths import state_dir

        home = state_dir()
    ckpt, status_file = state_path(home, ns), status_path(home, ns)
    state = load_state(ckpt)
    if state is not None and state.namespace != ns:
        raise ConfigError(f"{ckpt}: a checkpoint of namespace {state.namespace}, not {ns}")
    book = build_keybook(options.follow.home, [])
    follower = Follower(options.follow, book, state)
    consumer = clients.consumer(options.bootstrap, party=options.party,
                                isolation_level="read_committed",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = (clients.producer(options.bootstrap, party=options.party, linger_ms=5)
                if options.publish else None)
    try:
        await consumer.start()
        if producer is not None:
            await producer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerError(f"cannot reach Kafka at {options.bootstrap}: {exc}") from None
    run = FollowRun(delays_ms=[])
    stop = stop or asyncio.Event()
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        tps: list[TopicPartition] = []
        last_ts: dict[TopicPartition, int] = {}
        ends: dict[TopicPartition, int] = {}
        next_meta = next_ends = next_ckpt = next_status = 0.0
        idle_since: float | None = None
        waiting = False
        while not stop.is_set():
            mono = time.monotonic()
            if mono >= next_meta:
                found = await _partitions(consumer, ns)
                if found != tps:
                    new = [tp for tp in found if tp not in tps]
                    tps = found
                    consumer.assign(tps)
                    begin = await consumer.beginning_offsets(new) if new else {}
                    for tp in new:
                        at = follower.s.offsets.get((_suffix(tp.topic, ns), tp.partition))
                        consumer.seek(tp, at if at is not None else begin[tp])
                next_meta = mono + (30.0 if tps else 1.0)
                if not tps:  # started before the system made its topics: wait for them
                    if not waiting:
                        say_status(f"waiting for the topics of namespace {ns} (readable at "
                                   f"{options.bootstrap} as {options.party})")
                        waiting = True
                    await asyncio.sleep(1.0)
                    continue
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            records: list[Record] = []
            changelog: list[tuple[bytes | None, bytes | None]] = []
            for tp, messages in batch.items():
                suffix = _suffix(tp.topic, ns)
                for m in messages:
                    if suffix == CHANGELOG:
                        changelog.append((m.key, m.value))
                    else:
                        records.append(Record(suffix, tp.partition, m.offset, m.timestamp,
                                              m.key, m.value,
                                              tuple((k, bytes(v)) for k, v in (m.headers or ()))))
                if messages:
                    last_ts[tp] = messages[-1].timestamp
                    follower.s.offsets[(suffix, tp.partition)] = messages[-1].offset + 1
            if mono >= next_ends or not batch:
                ends = await consumer.end_offsets(tps)
                next_ends = mono + 1.0
            behind = sum(max(0, ends.get(tp, 0) - (follower.s.offsets.get(
                (_suffix(tp.topic, ns), tp.partition)) or 0)) for tp in tps)
            now_ms = _clock(tps, ends, last_ts, follower, ns)
            if changelog:
                follower.learn_key_records(changelog)
            found_now = follower.feed(records, now_ms) if records else follower.tick(now_ms)
            run.events += len(records)
            for f in found_now:
                record_ms = follower.record_time(f)
                say(finding_line(f))
                if record_ms:
                    run.delays_ms.append(time.time() * 1000 - record_ms)  # type: ignore[union-attr]
                if producer is not None:
                    await producer.send(findings_topic(ns), _event(ns, f, record_ms),
                                        key=f"{f.topic}/{f.partition}".encode())
            run.findings += len(found_now)
            run.behind = behind
            mono = time.monotonic()
            if mono >= next_ckpt:
                await _checkpoint(producer, follower, ckpt)
                next_ckpt = mono + options.checkpoint_s
            if mono >= next_status:
                _write_status(status_file, ns, follower, behind, "running", run, started)
                next_status = mono + 1.0
            if behind == 0 and not records and run.caught_up_s is None:
                run.caught_up_s = mono - started
            if options.exit_when_idle_s is not None:
                if behind == 0 and not records:
                    idle_since = idle_since or mono
                    if mono - idle_since >= options.exit_when_idle_s:
                        break
                else:
                    idle_since = None
        await _checkpoint(producer, follower, ckpt)
        run.seconds = time.monotonic() - started
        run.cpu_s = time.process_time() - cpu_started
        _write_status(status_file, ns, follower, run.behind, "stopped", run, started)
        return run
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()


def _clock(tps: list[TopicPartition], ends: dict[TopicPartition, int],
           last_ts: dict[TopicPartition, int], follower: Follower, ns: str) -> int:
    """The follower's now: the wall clock if every partition is read to its end, else the
    broker time of the slowest partition still being read."""
    wall = int(time.time() * 1000)
    behind = [last_ts.get(tp, 0) for tp in tps
              if (follower.s.offsets.get((_suffix(tp.topic, ns), tp.partition)) or 0)
              < ends.get(tp, 0)]
    return min(behind) if behind else wall


def _event(ns: str, f: Finding, record_ms: int | None) -> bytes:
    when = datetime.fromtimestamp((record_ms or 0) / 1000, UTC)
    ev = AuditFindingReported(**header("audit", finding_id(ns, f)[:32]),
                              finding_id=finding_id(ns, f), kind=f.kind,
                              topic=f"{ns}.{f.topic}", partition=f.partition, offset=f.offset,
                              record_time=when, reason=f.reason[:1000])
    return codec.encode(ev)


async def _checkpoint(producer: Any, follower: Follower, path: Path) -> None:
    if producer is not None:
        await producer.flush()  # the findings before the checkpoint are on the topic
    save_state(follower.snapshot(), path)


def _write_status(path: Path, ns: str, follower: Follower, behind: int, state: str,
                  run: FollowRun, started: float) -> None:
    last = follower.s.last_finding
    status = {
        "namespace": ns, "pid": os.getpid(), "state": state, "behind": behind,
        "events": follower.s.counts["events"], "findings": follower.s.counts["findings"],
        "last_finding": (f"{last.kind} {last.topic}/{last.partition}@{last.offset}"
                         if last is not None else None),
        "events_per_s": round(run.events / max(1e-3, time.monotonic() - started), 1),
        "updated_at": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


__all__ = ["FollowRun", "LiveOptions", "finding_line", "findings_topic", "follow", "load_state",
           "read_status", "save_state", "state_path", "status_path"]
