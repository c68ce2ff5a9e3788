"""The benchmark's process bookkeeping: leftovers of a killed run are found by namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psutil

from bench import procs


def test_leftover_workers_of_a_namespace_are_stopped_and_others_are_not() -> None:
    ns, other = f"t{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]

    def spawn(namespace: str) -> subprocess.Popen[bytes]:
        # in a session of its own, as a benchmark worker is: killing its parent leaves it
        return subprocess.Popen(sleeper, env={**os.environ, "CARDBUS_NAMESPACE": namespace},
                                start_new_session=True)

    mine = [spawn(ns), spawn(ns)]
    theirs = spawn(other)
    try:
        stopped = procs.kill_namespace(ns, grace_s=5)
        assert sorted(stopped) == sorted(p.pid for p in mine)
        for p in mine:
            assert p.wait(5) is not None
        assert theirs.poll() is None and psutil.pid_exists(theirs.pid)
        assert procs.kill_namespace(ns) == []
    finally:
        for p in [*mine, theirs]:
            if p.poll() is None:
                p.kill()
                p.wait()
