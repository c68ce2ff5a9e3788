"""Child processes CardBus starts: workers and virtual cards, each with its own log file and
process group, stopped by signal (``kill -9`` for the fault tests)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cardbus.paths import REPO_ROOT

SECRET_ENV_PREFIXES = ("CARDBUS_STORAGE_KEY",)
"""Environment variables that hold a party's storage key (``CARDBUS_STORAGE_KEY`` and
``CARDBUS_STORAGE_KEY_<PARTY>``): only the party's own worker may inherit them."""

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def child_env(env: Mapping[str, str] | None = None, *, keep: Iterable[str] = ()) -> dict[str, str]:
    """``env`` (default: this process's) without any storage key, but those named in ``keep``:
    what a virtual card or any other child that is not the key's party may inherit."""
    source = os.environ if env is None else env
    kept = set(keep)
    return {k: v for k, v in source.items()
            if k in kept or not k.startswith(SECRET_ENV_PREFIXES)}


def no_core_dumps() -> list[str]:
    """Keep this process's memory (clear keys, PINs in flight) out of core dumps: the core
    size limit set to 0 and, on Linux, the process made non-dumpable (no core, no ptrace
    attach by other processes of the same user, /proc/<pid>/mem closed to them). Call it at
    worker start. Returns what it did (for the start-up log line)."""
    done = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    done.append("RLIMIT_CORE=0")
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
            done.append("PR_SET_DUMPABLE=0")
    return done


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Worker:
    """One ``cardbus`` child process (``args`` after ``cardbus``)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    log_start: int = 0  # where this run's output begins in the (appended) log file

    def start(self) -> Worker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "console.cli", *self.args], cwd=REPO_ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log})\n" + "\n".join(text.splitlines()[-lines:])
