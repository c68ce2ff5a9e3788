"""The processes of a benchmark run: Faust workers, their CPU and memory, consumer lag, and a
sampling profile (py-spy) of the hottest one."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiokafka import TopicPartition

from streams import clients
from streams.security import bus_mode

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    """One process the benchmark watches (a worker it started, itself, or the broker)."""

    name: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    _cpu_mark: float = 0.0
    _wall_mark: float = 0.0

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        try:
            t = self.ps.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def mark(self) -> None:
        self._cpu_mark, self._wall_mark = self.cpu_seconds(), time.monotonic()

    def cpu_percent_since_mark(self) -> float:
        wall = time.monotonic() - self._wall_mark
        return round(100 * (self.cpu_seconds() - self._cpu_mark) / wall, 1) if wall else 0.0


@dataclass
class Fleet:
    """Worker processes of one run, plus the processes watched alongside them."""

    env: dict[str, str]
    logdir: Path
    log_level: str = "INFO"
    procs: list[Proc] = field(default_factory=list)

    def start_worker(self, name: str, *args: str) -> Proc:
        log = (self.logdir / f"{name}.log").open("ab")
        cmd = [sys.executable, "-m", "console.cli", "--log-level", self.log_level, "worker",
               *args]
        popen = subprocess.Popen(cmd,
                                 cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        log.close()
        proc = Proc(name, popen.pid, popen)
        self.procs.append(proc)
        return proc

    def watch(self, name: str, pid: int | None) -> None:
        if pid is not None and psutil.pid_exists(pid):
            self.procs.append(Proc(name, pid))

    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.popen is not None]

    def check_alive(self) -> None:
        dead = [p.name for p in self.workers() if p.popen and p.popen.poll() is not None]
        if dead:
            raise RuntimeError(f"worker(s) exited: {dead}; see {self.logdir}\n"
                               + self.tail(dead[0]))

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def sample_forever(self, every: float = 0.5) -> None:
        while True:
            for p in self.procs:
                p.sample()
            await asyncio.sleep(every)

    def mark(self) -> None:
        for p in self.procs:
            p.mark()

    def usage(self) -> dict[str, dict[str, float]]:
        """CPU % of one core since the last mark, and peak RSS so far, per process."""
        return {p.name: {"cpu_percent": p.cpu_percent_since_mark(),
                         "peak_rss_mib": round(p.peak_rss / 2**20, 1)} for p in self.procs}

    def stop(self) -> None:
        for p in self.workers():
            if p.popen is not None and p.popen.poll() is None:
                os.killpg(p.popen.pid, signal.SIGTERM)
        for p in self.workers():
            if p.popen is None:
                continue
            try:
                p.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()


def kill_namespace(namespace: str, grace_s: float = 10.0) -> list[int]:
    """Stop every process of this user whose environment names ``CARDBUS_NAMESPACE=namespace``
    (SIGTERM, then SIGKILL after ``grace_s``); returns their pids. A run's workers live in
    process groups of their own, so a run that was killed (a scenario past its timeout, a
    SIGKILL) leaves them behind; each run has its own namespace, which finds them all."""
    mine = os.getuid()
    found: list[psutil.Process] = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.pid == os.getpid() or p.info["uids"] is None or p.info["uids"].real != mine:
                continue
            if p.environ().get("CARDBUS_NAMESPACE") == namespace:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for p in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in found]


def cluster_env(bootstrap: str) -> dict[str, str]:
    """What a child process given its own ``CARDBUS_HOME`` needs to find the cluster at
    ``bootstrap`` (its mode, CA and the operator's vault): ``CARDBUS_KAFKA_CLUSTER`` naming the
    local cluster's folder, resolved here, where the state folder still holds its record. Empty
    when the cluster is not a local one (its settings come from the environment then)."""
    home = bus_mode(bootstrap).cluster_home
    return {} if home is None else {"CARDBUS_KAFKA_CLUSTER": str(home)}


def broker_pid(bootstrap: str) -> int | None:
    """The local process listening on the first bootstrap port (None if not local)."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == int(port):
                return int(conn.pid) if conn.pid is not None else None
    except psutil.Error:
        return None
    return None


async def consumer_lag(bootstrap: str, groups: dict[str, list[tuple[str, int]]]
                       ) -> dict[str, int]:
    """Total lag (end offset - committed offset) per consumer group over its source topics
    (``groups``: group id -> [(topic, partitions)])."""
    admin = clients.admin(bootstrap)
    consumer = clients.consumer(bootstrap, party="operator")
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, int] = {}
        for group, topics in groups.items():
            tps = [TopicPartition(t, p) for t, n in topics for p in range(n)]
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group)
            out[group] = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed
                                                and committed[tp].offset >= 0 else 0))
                             for tp in tps)
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def topic_ends(bootstrap: str, prefix: str) -> dict[str, int]:
    """Records written so far to each topic whose name starts with ``prefix`` (the sum of its
    partitions' end offsets), Faust's changelogs included: two snapshots give the records a
    phase wrote, topic by topic."""
    admin = clients.admin(bootstrap)
    consumer = clients.consumer(bootstrap, party="operator")
    await admin.start()
    await consumer.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        tps = [TopicPartition(t, p) for t in names
               for p in (consumer.partitions_for_topic(t) or set())]
        if len(tps) < len(names):  # metadata of topics the consumer has not seen yet
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(t, p) for t in names
                   for p in (consumer.partitions_for_topic(t) or set())]
        ends = await consumer.end_offsets(tps) if tps else {}
        out = dict.fromkeys(names, 0)
        for tp, end in ends.items():
            out[tp.topic] += end
        return out
    finally:
        await consumer.stop()
        await admin.close()


def records_per_payment(before: dict[str, int], after: dict[str, int], payments: int,
                        prefix: str = "") -> dict[str, Any]:
    """Records written per payment between two ``topic_ends`` snapshots: in total and per
    topic (names without ``prefix``), largest first."""
    delta = {t[len(prefix):] if t.startswith(prefix) else t: n - before.get(t, 0)
             for t, n in after.items() if n - before.get(t, 0) > 0}
    per = max(payments, 1)
    return {"total": round(sum(delta.values()) / per, 2), "payments": payments,
            "by_topic": {t: round(n / per, 3)
                         for t, n in sorted(delta.items(), key=lambda kv: -kv[1])}}


def py_spy() -> str | None:
    """The py-spy binary (the ``bench`` extra), or None."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` (raw collapsed stacks) against ``pid`` for ``seconds``."""
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration",
                             str(max(1, int(seconds))), "--rate", "200", "--format", "raw",
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks."""
    if not path.exists():
        return {}
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            if any(part in f for part in ("agents/", "schemas/", "streams/", "cardbus/",
                                          "reader_agent/")):
                incl[f] += n
    if not total:
        return {}
    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in c.most_common(top)]

    return {"samples": total, "self_percent": pct(own), "inclusive_percent_own_code": pct(incl)}


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file/tail.py)`` without the line number."""
    frame = frame.strip()
    if "(" in frame and frame.endswith(")"):
        func, _, where = frame[:-1].partition(" (")
        where = where.rsplit(":", 1)[0]
        for marker in ("site-packages/", "/work/main/", "python3.11/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        return f"{func} ({where})"
    return frame
