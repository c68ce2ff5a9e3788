"""A tiny ``cardbus bench chaos`` (one scenario, on its own broker): the JSON shape and the
accounting (no timing assertions: the figures are printed, not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.broker, pytest.mark.slow]
KEYS = {"scenario", "requests", "final_outcomes", "answered", "cancelled", "lost", "duplicated",
        "approvals_reversed", "ledgers", "ledgers_balance", "time_to_recover_s", "recoveries",
        "steps", "ok"}


def test_tiny_chaos_benchmark_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "console.cli", "bench", "chaos", "--scenarios", "bank-pause",
         "--seconds", "20", "--rate", "15", "--cards", "40", "--terminals", "4", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (s,) = result["scenarios"]
    assert set(s) >= KEYS, KEYS - set(s)
    assert s["scenario"] == "bank-pause" and s["ok"] and result["ok"]
    assert s["lost"] == 0 and s["duplicated"] == 0 and s["ledgers_balance"]
    assert s["requests"] == s["final_outcomes"] >= 15 * 20
    assert [(x["action"], x["target"]) for x in s["steps"]] == [("pause", "bank-a-1"),
                                                                 ("resume", "bank-a-1")]
    assert sum(v["settled"] for v in s["ledgers"].values()) > 0
