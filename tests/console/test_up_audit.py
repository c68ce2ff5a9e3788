"""``cardbus up``'s line for the live audit, from the status file the follower writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from audit.live import read_status, status_path
from console.up import audit_line


def _write(home: Path, **status: object) -> None:
    path = status_path(home, "ns")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"namespace": "ns", "events": 1200, "findings": 0,
                                "last_finding": None, "updated_at": time.time(), **status}))


def test_running_behind_and_last_finding(tmp_path: Path) -> None:
    assert audit_line(read_status(tmp_path, "ns")) == "audit: not started"
    _write(tmp_path, state="running", behind=0)
    assert audit_line(read_status(tmp_path, "ns")).startswith("audit: running, 1,200 events")
    _write(tmp_path, state="running", behind=3456, findings=1,
           last_finding="chain provider-results/2@17")
    line = audit_line(read_status(tmp_path, "ns"))
    assert line.startswith("audit: behind by 3,456 events")
    assert line.endswith("1 finding(s), last finding: chain provider-results/2@17")


def test_a_status_not_refreshed_is_a_stopped_follower(tmp_path: Path) -> None:
    _write(tmp_path, state="running", behind=0, updated_at=time.time() - 60)
    assert audit_line(read_status(tmp_path, "ns")).startswith("audit: stopped")
