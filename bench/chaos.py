"""``cardbus bench chaos``: payments under open-loop load while workers join, leave, crash or
stall and brokers restart or die; every payment must end in exactly one outcome at its terminal
and every ledger must match those outcomes.

The run owns its brokers (it restarts and kills them), secured as everywhere (TLS, SCRAM, ACLs;
each scenario makes its namespace's parties, admits its banks and activates its terminals as
``cardbus bench pipeline`` does): a single node on free loopback ports for
the worker scenarios and the broker restart, a three-node cluster (replication 3,
``min.insync.replicas=2``) for the broker loss. Each scenario runs in its own topic namespace in
a child process (``bench.chaos_run``). The scenarios are in ``bench.faults``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import faults, procs, stats
from bench.procs import REPO
from streams import broker

BROKER_PORT = 28092
"""Where the run's brokers listen: below Linux's ephemeral range (32768-60999 by default). A
broker that is down for a while must get its port back, and in that range a client reconnecting
to the stopped broker can be given that very port as its own local port (a TCP self-connect to
127.0.0.1:port) and hold it: the restarted broker then fails with "Address already in use"."""

SCENARIO_TIMEOUT_S = 900.0
"""A scenario that takes longer has hung: it is stopped and reported as failed."""

@dataclass(frozen=True)
class Options:
    """What to run (``cardbus bench chaos --help`` explains each)."""

    scenarios: tuple[str, ...] = tuple(s.name for s in faults.SCENARIOS)
    partitions: int = 6
    seconds: float = 45.0
    rate: float | None = None
    fraction: float = 0.5
    max_payments: int = 1500
    cards: int = 400
    terminals: int = 32
    platform_timeout: float = 10.0
    deadline: float = 30.0
    resend_first: float = 2.0
    resend: bool = True
    patches: str = "all"
    trace: bool = False
    exactly_once: bool = False
    reversal_wait: float = 75.0
    keep: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def child_config(opts: Options, scenario: str, bootstrap: str, home: Path,
                 cluster_home: Path) -> dict[str, Any]:
    return {"scenario": scenario, "bootstrap": bootstrap, "home": str(home),
            "cluster_home": str(cluster_home), "seconds": opts.seconds, "rate": opts.rate,
            "fraction": opts.fraction, "max_payments": opts.max_payments, "cards": opts.cards,
            "terminals": opts.terminals, "platform_timeout": opts.platform_timeout,
            "deadline": opts.deadline, "resend_first": opts.resend_first,
            "resend": opts.resend, "exactly_once": opts.exactly_once,
            "reversal_wait": opts.reversal_wait}


def run_scenario(opts: Options, scenario: str, cluster: broker.Cluster, root: Path
                 ) -> dict[str, Any]:
    """One scenario in a child process with a fresh namespace."""
    ns = f"chaos{secrets.token_hex(3)}"
    home = root / ns
    home.mkdir(parents=True)
    env = {**os.environ, **opts.extra_env, "CARDBUS_NAMESPACE": ns, "CARDBUS_HOME": str(home),
           "CARDBUS_PAYMENT_PARTITIONS": str(opts.partitions),
           "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap, "CARDBUS_FAUST_PATCHES": opts.patches,
           "CARDBUS_KAFKA_LIBS": cluster.libs or str(broker.libs_dir()),
           # the run's own cluster: its mode, CA and the operator's vault
           "CARDBUS_KAFKA_CLUSTER": str(cluster.home),
           "CARDBUS_FAUST_TRACE": "1" if opts.trace else "0", "PYTHONUNBUFFERED": "1"}
    err = home / "chaos-child.log"
    cfg = child_config(opts, scenario, cluster.bootstrap, home, cluster.home)
    with err.open("wb") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "bench.chaos_run", json.dumps(cfg)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errf)
        try:
            stdout, _ = proc.communicate(timeout=SCENARIO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()  # the child stops its workers on SIGTERM
            try:
                stdout, _ = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, _ = proc.communicate()
    leftovers = procs.kill_namespace(ns)  # workers of a child that did not stop them
    if proc.returncode != 0:
        tail = "\n".join(err.read_text(errors="replace").splitlines()[-30:])
        return {"scenario": scenario, "ok": False, "error": f"exit {proc.returncode}",
                "log": str(err), "tail": tail, "workdir": str(home),
                "leftover_processes_stopped": len(leftovers)}
    out: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    out["workdir"] = str(home)
    return out


@contextlib.contextmanager
def _cluster_env(home: Path) -> Iterator[None]:
    """``CARDBUS_KAFKA_CLUSTER`` names ``home`` meanwhile (how clients find a secured cluster's
    CA and the operator's vault)."""
    old = os.environ.get("CARDBUS_KAFKA_CLUSTER")
    os.environ["CARDBUS_KAFKA_CLUSTER"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CARDBUS_KAFKA_CLUSTER", None)
        else:
            os.environ["CARDBUS_KAFKA_CLUSTER"] = old


def run(opts: Options) -> dict[str, Any]:
    """Every chosen scenario; one JSON-able dict with a ``scenarios`` list."""
    unknown = [s for s in opts.scenarios if s not in faults.BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(faults.BY_NAME)}")
    root = Path(tempfile.mkdtemp(prefix="cardbus-chaos-"))
    result: dict[str, Any] = {"machine": stats.machine(), "options": asdict(opts),
                              "workdir": str(root), "scenarios": []}
    for size in (1, 3):
        chosen = [s.name for s in faults.SCENARIOS
                  if s.name in opts.scenarios and s.brokers == size]
        if not chosen:
            continue
        home = root / f"kafka-{size}"
        with _cluster_env(home):  # secured, as everywhere: the operator's vault lives there
            cluster = broker.start_on_free_ports(home, brokers=size, start_port=BROKER_PORT)
            try:
                for name in chosen:
                    result["scenarios"].append(run_scenario(opts, name, cluster, root))
            finally:
                broker.stop(home)
    order = list(opts.scenarios)
    result["scenarios"].sort(key=lambda s: order.index(s["scenario"]))
    result["ok"] = all(s.get("ok") for s in result["scenarios"])
    return result


def _lat(s: dict[str, Any]) -> str:
    lat = s.get("latency_ms") or {}
    return f"p50 {lat.get('p50', 0):.0f} / p99 {lat.get('p99', 0):.0f} ms"


def text(r: dict[str, Any]) -> str:
    """The report, one block per scenario."""
    m, o = r["machine"], r["options"]
    lines = [f"cardbus bench chaos on {m['cores']} cores, {m['cpu']}; load average at start "
             f"{m['load_average_at_start']}; {o['partitions']} partitions, {o['seconds']:.0f} s "
             f"of open-loop load per scenario, terminals resend after {o['resend_first']:.0f} s "
             f"and cancel at {o['deadline']:.0f} s, platform timeout "
             f"{o['platform_timeout']:.0f} s, Faust patches: {o['patches']}"]
    for s in r["scenarios"]:
        lines.append(f"\n[{s['scenario']}] {s.get('title', '')}")
        if "error" in s:
            lines.append(f"  FAILED: {s['error']} (log {s['log']})\n{s['tail']}")
            continue
        rate = (f"{s['offered_per_s']:.1f}/s offered (max {s.get('max_payments_per_s', '-')}"
                f"/s)")
        lines.append(f"  {s['requests']} requests, {rate}; {s['final_outcomes']} final "
                     f"outcomes ({s['answered']} answered, {s['cancelled']} cancelled by the "
                     f"terminal); lost {s['lost']}, duplicated {s['duplicated']}; "
                     f"codes {s['response_codes']}")
        lines.append(f"  resent {s['resent_payments']} payments ({s['resends']} resends); "
                     f"approvals reversed {s['approvals_reversed']} "
                     f"{s['reversals_by_reason']}; ledgers "
                     f"{'balance' if s['ledgers_balance'] else 'DO NOT balance'} "
                     f"{ {k: v['difference'] for k, v in s['ledgers'].items()} }")
        recs = ", ".join(f"{x['at']:.0f} s: {x['seconds']} s (worst p99 {x['worst_p99_ms']})"
                         for x in s["recoveries"])
        lines.append(f"  latency {_lat(s)}; steady p99 {s['steady_p99_ms']} ms; time to "
                     f"recover {s['time_to_recover_s']} s [{recs}]")
        steps = "; ".join(f"{x['at']} s {x['action']} {x['target']} ({x['seconds']} s)"
                          for x in s["steps"])
        lines.append(f"  steps: {steps}")
        if s.get("dead_letters") or s.get("log_counts"):
            lines.append(f"  dead letters {s.get('dead_letters')}; log {s.get('log_counts')}")
        lines.append(f"  load average {s['load_average_at_start']:.2f} -> "
                     f"{s['load_average_at_end']:.2f}; {'ok' if s['ok'] else 'FAILED'}")
    lines.append(f"\n{'ok' if r['ok'] else 'FAILED'}: every scenario lost 0, duplicated 0, "
                 f"ledgers balance" if r["ok"] else "\nFAILED")
    return "\n".join(lines)
