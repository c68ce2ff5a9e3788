"""The faults of ``cardbus bench chaos``: each scenario is a timed list of steps against the
running workers (``Fleet``) or the broker nodes (``streams.broker``).

A step's time is seconds after the open-loop load starts. ``Stage`` carries the processes and
does the steps; each step is logged with the time it took (a clean broker stop takes seconds).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Fleet, Proc
from streams import broker, clients
from streams.topics import PAYMENT_REQUESTS

PROVIDERS = ("bank-a", "bank-b")
FAULT_AT = 6.0


@dataclass(frozen=True)
class Step:
    """One action at ``at`` seconds: ``start``/``terminate``/``kill``/``pause``/``resume`` a
    worker, ``broker-restart`` (clean stop, ``down`` s, start), ``broker-kill``,
    ``broker-start`` a node (``lead``: the leader of the requests' partition 0)."""

    at: float
    action: str
    target: str
    down: float = 0.0
    fault: bool = True  # the recovery time is measured from this step


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    steps: tuple[Step, ...]
    brokers: int = 1
    min_seconds: float = 0.0  # load at least this long (a broker takes long to start again)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("platform-join-leave",
             "a second platform worker joins mid-load, later leaves (SIGTERM)",
             (Step(FAULT_AT, "start", "platform-2"),
              Step(FAULT_AT + 8, "terminate", "platform-2"))),
    Scenario("bank-join-leave", "a second bank-a worker joins mid-load, later leaves (SIGTERM)",
             (Step(FAULT_AT, "start", "bank-a-2"), Step(FAULT_AT + 8, "terminate", "bank-a-2"))),
    Scenario("platform-kill-restart",
             "kill -9 of the only platform worker mid-load, restarted 2 s later",
             (Step(FAULT_AT, "kill", "platform-1"),
              Step(FAULT_AT + 2, "start", "platform-1", fault=False))),
    Scenario("bank-pause", "SIGSTOP of the bank-a worker for 5 s, then SIGCONT",
             (Step(FAULT_AT, "pause", "bank-a-1"),
              Step(FAULT_AT + 5, "resume", "bank-a-1", fault=False))),
    Scenario("broker-restart", "restart of the single broker mid-load (down 3 s)",
             (Step(FAULT_AT, "broker-restart", "1", down=3.0),), min_seconds=60.0),
    Scenario("broker-kill-3",
             "3 brokers (replication 3, min.insync.replicas 2): kill -9 of one mid-load, "
             "restarted 8 s later",
             (Step(FAULT_AT, "broker-kill", "lead"),
              Step(FAULT_AT + 8, "broker-start", "lead")), brokers=3, min_seconds=50.0),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def worker_args(name: str, home: Path, bootstrap: str, platform_timeout: float,
                extra: tuple[str, ...] = ()) -> list[str]:
    """``cardbus worker`` arguments for a worker named ``platform-N`` or ``<provider>-N``."""
    kind, _, instance = name.rpartition("-")
    common = ["--instance", instance, "--datadir", str(home / f"w-{name}"),
              "--bootstrap", bootstrap, "--loglevel", "warn", *extra]
    if kind == "platform":
        return ["platform", "--timeout", str(platform_timeout), *common]
    return ["provider", kind, *common]


@dataclass
class Stage:
    """The running workers and broker nodes of one scenario, and what was done to them."""

    fleet: Fleet
    home: Path
    bootstrap: str
    cluster_home: Path | None
    platform_timeout: float
    worker_extra: tuple[str, ...] = ()
    log: list[dict[str, object]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # workers stopped on purpose
    _lead: int | None = None

    def start(self, name: str) -> Proc:
        self.down.discard(name)
        self.fleet.procs = [p for p in self.fleet.procs if p.name != name]
        return self.fleet.start_worker(name, *worker_args(
            name, self.home, self.bootstrap, self.platform_timeout, self.worker_extra))

    def proc(self, name: str) -> Proc:
        return next(p for p in self.fleet.procs if p.name == name)

    def _signal(self, name: str, sig: int) -> None:
        os.killpg(self.proc(name).pid, sig)

    async def do(self, step: Step, t0: float) -> None:
        """Wait until ``step.at`` (seconds after ``t0``) and do it."""
        await asyncio.sleep(max(0.0, t0 + step.at - time.time()))
        began = time.time()
        detail = await asyncio.to_thread(self._do, step)
        self.log.append({"at": round(began - t0, 2), "action": step.action,
                         "target": step.target, "seconds": round(time.time() - began, 2),
                         **detail})

    def _do(self, step: Step) -> dict[str, object]:
        a, target = step.action, step.target
        if a == "start":
            self.start(target)
        elif a == "terminate":
            self.down.add(target)
            self._signal(target, signal.SIGTERM)
            _wait(self.proc(target), 60)
        elif a == "kill":
            self.down.add(target)
            self._signal(target, signal.SIGKILL)
            _wait(self.proc(target), 10)
        elif a == "pause":
            self._signal(target, signal.SIGSTOP)
        elif a == "resume":
            self._signal(target, signal.SIGCONT)
        else:
            return self._broker(step)
        return {}

    def _broker(self, step: Step) -> dict[str, object]:
        assert self.cluster_home is not None, "broker faults need the run's own cluster"
        cluster = broker.Cluster.load(self.cluster_home)
        assert cluster is not None
        node = self._node(step.target)
        if step.action == "broker-restart":
            broker.stop_node(cluster, node)
            time.sleep(step.down)
            broker.start_node(cluster, node)
        elif step.action == "broker-kill":
            broker.kill_node(cluster, node)
        elif step.action == "broker-start":
            broker.start_node(cluster, node)
        else:
            raise ValueError(f"unknown step {step.action}")
        return {"node": node}

    def _node(self, target: str) -> int:
        if target != "lead":
            return int(target)
        if self._lead is None:
            self._lead = asyncio.run(lead_node(self.bootstrap))
        return self._lead

    def stop_all(self) -> None:
        for p in self.fleet.workers():  # a paused worker would not see its SIGTERM
            if p.popen is not None and p.popen.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
        self.fleet.stop()

    def check_alive(self) -> None:
        dead = [p.name for p in self.fleet.workers()
                if p.popen is not None and p.popen.poll() is not None and p.name not in self.down]
        if dead:
            raise RuntimeError(f"worker(s) exited: {dead}\n{self.fleet.tail(dead[0])}")


def _wait(proc: Proc, timeout: float) -> None:
    if proc.popen is None:
        return
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait()


async def lead_node(bootstrap: str) -> int:
    """The broker node leading partition 0 of the payment requests."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([PAYMENT_REQUESTS.name])
        leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
        return int(leaders[0])
    finally:
        await admin.close()
