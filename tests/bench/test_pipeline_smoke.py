"""A tiny ``cardbus bench pipeline`` on the real broker: the JSON shape and the accounting
(no timing assertions: the figures are printed, not judged)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_tiny_pipeline_benchmark_json(kafka_bootstrap: str, tmp_path: Path) -> None:
    plot = tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "console.cli", "bench", "pipeline", "--bootstrap",
         kafka_bootstrap, "--payments", "60", "--window", "20", "--terminals", "2",
         "--cards", "8", "--warmup", "10", "--open-loop", "0.5", "--open-seconds", "1",
         "--profile-seconds", "0", "--no-scaling", "--raw-messages", "500",
         "--worker-log-level", "WARNING", "--keep", "--json", "--plot", str(plot)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("raw_single_hop_msgs_per_s", "pipeline_payments_per_s", "latency_ms", "lost",
                "duplicated", "machine", "cpu_ms_per_payment"):
        assert key in result
    assert set(result["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert result["raw_single_hop_msgs_per_s"] > 0 and result["pipeline_payments_per_s"] > 0
    # CPU per payment: summed over every process of the base run (the load generator too)
    by_process = result["cpu_ms_per_payment_by_process"]
    assert set(by_process) == set(result["runs"][0]["processes"]), by_process
    assert result["cpu_ms_per_payment"] == pytest.approx(sum(by_process.values()), abs=0.05)
    assert result["cpu_ms_per_payment"] > 0
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["ok"]
    (run,) = result["runs"]
    acc = run["accounting"]
    # requests are made whole rounds over the cards: at least what each phase asked for
    phases = [run["warmup"], run["max"], *run["open_loop"]]
    assert run["warmup"]["sent"] >= 10 and run["max"]["sent"] >= 60
    assert acc["requests"] == sum(p["sent"] for p in phases)
    assert all(p["answered"] == p["sent"] for p in phases)
    assert acc["results"] == acc["requests"]
    assert acc["approved_minor_units"] == acc["ledger_minor_units"]
    assert sum(acc["ledger_minor_units"].values()) > 0
    assert {"platform-1", "bank-a-1", "bank-b-1", "load-generator"} <= set(run["processes"])
    assert plot.stat().st_size > 0
    # records written per payment in the closed loop, changelogs included: at least the
    # request, the bank's request, its decision, the answer and the platform's pending record
    per = run["records_per_payment"]
    assert result["records_per_payment"] == per["total"] >= 5
    assert per["payments"] == run["max"]["answered"]
    for suffix in (".payment-requests", ".provider-results", ".terminal-results",
                   "-platform-pending-changelog"):
        assert any(t.endswith(suffix) and n >= 1 for t, n in per["by_topic"].items()), (
            suffix, per)

    # the run's trail audits clean: every seal, chain, settlement batch and re-derived decision
    # (one cut-over per partition, each with its own event id, closes each batch once)
    home = Path(result["workdir"]) / run["namespace"]
    try:
        audit = subprocess.run(
            [sys.executable, "-m", "console.cli", "audit", "--namespace", run["namespace"],
             "--bootstrap", kafka_bootstrap, "--home", str(home), "--as", "operator", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
        report = json.loads(audit.stdout)
        assert audit.returncode == 0 and report["ok"], report["findings"][:5]
        assert report["findings"] == [] and report["events_read"] >= 4 * acc["requests"]
        assert report["counts"], report
    finally:
        shutil.rmtree(result["workdir"], ignore_errors=True)
