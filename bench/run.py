"""``cardbus bench pipeline``: the raw single hop, then each pipeline configuration in its own
namespace (a child process, see ``bench.pipeline``), then one report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import stats
from bench.procs import REPO, broker_pid, cluster_env
from streams import clients

REQUEST_BYTES = 1118  # a PaymentRequested with PIN block, as encoded (measured)
PAYMENT_PARTITIONS = 6


@dataclass(frozen=True)
class Options:
    """What to run."""

    bootstrap: str
    payments: int = 6_000
    window: int = 300
    terminals: int = 16
    cards: int = 400
    warmup: int = 200
    open_loop: tuple[float, ...] = (0.25, 0.5, 0.75)
    open_seconds: float = 8.0
    profile_seconds: float = 5.0
    scaling: bool = True
    scaled_partitions: int = 12
    raw_messages: int = 60_000
    cutover_every: float = 2.0
    worker_log_level: str = "INFO"
    keep: bool = False


def configs(opts: Options) -> list[dict[str, Any]]:
    """The configurations of one benchmark: the base (1 worker per stage, open loop,
    profile), then 2 workers per stage, then 2 workers per stage on more partitions."""
    base = {"bootstrap": opts.bootstrap, "window": opts.window, "terminals": opts.terminals,
            "cards": opts.cards, "warmup": opts.warmup, "payments": opts.payments,
            "cutover_every": opts.cutover_every, "open_seconds": opts.open_seconds}
    out = [{**base, "label": f"1 worker/stage, {PAYMENT_PARTITIONS} partitions",
            "workers_per_stage": 1, "partitions": PAYMENT_PARTITIONS,
            "open_loop": list(opts.open_loop), "profile_seconds": opts.profile_seconds}]
    if opts.scaling:
        out.append({**base, "label": f"2 workers/stage, {PAYMENT_PARTITIONS} partitions",
                    "workers_per_stage": 2, "partitions": PAYMENT_PARTITIONS,
                    "open_loop": [], "profile_seconds": 0})
        out.append({**base, "label": f"2 workers/stage, {opts.scaled_partitions} partitions",
                    "workers_per_stage": 2, "partitions": opts.scaled_partitions,
                    "open_loop": [], "profile_seconds": 0})
    return out


def run_config(cfg: dict[str, Any], root: Path, log_level: str) -> dict[str, Any]:
    """One configuration in a child process with a fresh namespace."""
    ns = f"bench{secrets.token_hex(3)}"
    home = root / ns
    home.mkdir(parents=True)
    env = {**os.environ, **cluster_env(cfg["bootstrap"]), "CARDBUS_NAMESPACE": ns,
           "CARDBUS_HOME": str(home),
           "CARDBUS_PAYMENT_PARTITIONS": str(cfg["partitions"]),
           "CARDBUS_LOG_LEVEL": log_level, "PYTHONUNBUFFERED": "1"}
    child = {**cfg, "home": str(home), "broker_pid": broker_pid(cfg["bootstrap"]),
             "log_level": log_level}
    err = home / "bench-child.log"
    with err.open("wb") as errf:
        proc = subprocess.run([sys.executable, "-m", "bench.pipeline", json.dumps(child)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errf,
                              check=False)
    if proc.returncode != 0:
        tail = "\n".join(err.read_text(errors="replace").splitlines()[-25:])
        return {"label": cfg["label"], "error": f"exit {proc.returncode}", "log": str(err),
                "tail": tail}
    return {"label": cfg["label"], **json.loads(proc.stdout)}


def run(opts: Options) -> dict[str, Any]:
    """The whole benchmark; one JSON-able dict."""
    from bench.raw import single_hop

    result: dict[str, Any] = {"machine": stats.machine(), "options": asdict(opts),
                              "broker": opts.bootstrap}
    raw = single_hop(opts.bootstrap, topic=f"bench-raw-{secrets.token_hex(3)}",
                     partitions=PAYMENT_PARTITIONS, size=REQUEST_BYTES,
                     count=opts.raw_messages)
    result["raw_single_hop"] = raw
    result["raw_single_hop_msgs_per_s"] = raw["msgs_per_s"]
    root = Path(tempfile.mkdtemp(prefix="cardbus-bench-"))
    result["workdir"] = str(root)
    runs = [run_config(cfg, root, opts.worker_log_level) for cfg in configs(opts)]
    result["runs"] = runs
    base = runs[0]
    ok_runs = [r for r in runs if "error" not in r]
    for r in ok_runs:
        r["limit"] = stats.limit(r["processes"], r["max"]["payments_per_s"],
                                 result["machine"]["cores"])
    result["pipeline_payments_per_s"] = base.get("max", {}).get("payments_per_s", 0.0)
    result["best_payments_per_s"] = max((r["max"]["payments_per_s"] for r in ok_runs),
                                        default=0.0)
    result["latency_ms"] = base.get("max", {}).get("latency_ms", stats.percentiles([]))
    # CPU per payment summed over every process of the base run (broker and load generator
    # included), at its closed-loop maximum
    result["cpu_ms_per_payment"] = base.get("limit", {}).get("cpu_ms_per_payment_total")
    result["cpu_ms_per_payment_by_process"] = base.get("limit", {}).get("cpu_ms_per_payment")
    # Kafka records (changelogs included) written per payment in the closed-loop phase
    result["records_per_payment"] = base.get("records_per_payment", {}).get("total")
    half = [p for p in base.get("open_loop", []) if abs(p["fraction"] - 0.5) < 1e-9]
    result["latency_at_50pct_ms"] = half[0]["latency_ms"] if half else None
    result["lost"] = sum(r["accounting"]["lost"] for r in ok_runs)
    result["duplicated"] = sum(r["accounting"]["duplicated"] for r in ok_runs)
    result["ledgers_balance"] = all(not r["accounting"]["ledger_mismatch"] for r in ok_runs)
    rate, raw_rate = result["best_payments_per_s"], result["raw_single_hop_msgs_per_s"]
    result["pipeline_vs_raw_percent"] = round(100 * rate / raw_rate, 2) if raw_rate else 0.0
    p99_half = (result["latency_at_50pct_ms"] or {}).get("p99")
    result["targets"] = {
        "payments_per_s>=1000": rate >= 1000,
        "cpu_ms_per_payment<=2": (result["cpu_ms_per_payment"] is not None
                                  and result["cpu_ms_per_payment"] <= 2.0),
        "pipeline>=15%_of_raw": result["pipeline_vs_raw_percent"] >= 15,
        "p99<=100ms_at_50%": p99_half is not None and p99_half <= 100}
    result["ok"] = (len(ok_runs) == len(runs) and result["lost"] == 0
                    and result["duplicated"] == 0 and result["ledgers_balance"]
                    and all(r["accounting"]["ok"] for r in ok_runs))
    if not opts.keep:
        _cleanup(opts.bootstrap, [r["namespace"] for r in ok_runs])
        if result["ok"]:  # the workers' logs and the run's key stores: kept only to look into
            shutil.rmtree(root, ignore_errors=True)
            result["workdir"] = None
    return result


def _cleanup(bootstrap: str, namespaces: list[str]) -> None:
    """Delete the run's topics (each namespace is the prefix of its topics)."""

    async def go() -> None:
        admin = clients.admin(bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics()
                     if any(t.startswith((ns + ".", ns + "-")) for ns in namespaces)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    with contextlib.suppress(Exception):  # leftover topics are harmless; the report stays
        asyncio.run(go())
