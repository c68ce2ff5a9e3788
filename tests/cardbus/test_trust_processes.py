"""Issue 22, finding 10 and a low: workers keep their memory out of core dumps; children that
are not a key's party do not inherit storage keys."""

from __future__ import annotations

import subprocess
import sys

from cardbus.processes import child_env


def test_a_child_env_has_no_storage_keys() -> None:
    env = {"PATH": "/usr/bin", "CARDBUS_STORAGE_KEY": "1:abc",
           "CARDBUS_STORAGE_KEY_PLATFORM": "1:def", "CARDBUS_STORAGE_KEY_TERMINAL_T_1": "1:x",
           "CARDBUS_HOME": "/srv/cardbus"}
    assert child_env(env) == {"PATH": "/usr/bin", "CARDBUS_HOME": "/srv/cardbus"}
    assert child_env(env, keep=["CARDBUS_STORAGE_KEY_PLATFORM"]) == {
        "PATH": "/usr/bin", "CARDBUS_HOME": "/srv/cardbus", "CARDBUS_STORAGE_KEY_PLATFORM": "1:def"}


def test_no_core_dumps_in_a_worker() -> None:
    """Run in a child (the call is for the whole process): core limit 0, not dumpable."""
    code = (
        "import resource\n"
        "from cardbus.processes import no_core_dumps\n"
        "done = no_core_dumps()\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "import ctypes; libc = ctypes.CDLL(None)\n"
        "assert libc.prctl(3, 0, 0, 0, 0) == 0, 'PR_GET_DUMPABLE'\n"  # 3 = PR_GET_DUMPABLE
        "print(','.join(done))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=child_env())
    assert out.stdout.strip() == "RLIMIT_CORE=0,PR_SET_DUMPABLE=0"
