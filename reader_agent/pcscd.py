"""Run the real pcscd with a project-owned reader config of vpcd virtual readers.

One vpcd reader entry gives two readers (slots ``00 00`` and ``00 01``) on two TCP ports, so
``n`` readers need ``ceil(n / 2)`` entries, each with its **own copy** of the vpcd driver .so
(entries that share one LIBPATH clobber each other's slots). pcscd runs in the foreground
(``--foreground``), never with ``--auto-exit``, as a child we detach and stop by PID.

Virtual reader ``k`` (0-based) is reader entry ``k // 2``, slot ``k % 2``, listening on TCP port
``base_port + k``; its PC/SC name is ``"CardBus VPCD <k//2> 00 0<k%2>"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cardbus.errors import PcscError
from cardbus.logs import get_logger
from cardbus.paths import sub_dir
from cardbus.processes import pid_alive
from cardbus.readers import (
    DEFAULT_BASE_PORT,
    DEFAULT_READERS,
    READER_PREFIX,
    VirtualReader,
    virtual_readers,
)

log = get_logger("reader_agent.pcscd")

PCSCD = "pcscd"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
APT_PACKAGES = ("pcscd", "libpcsclite-dev", "pcsc-tools", "swig", "vsmartcard-vpcd")


class Pcscd:
    """pcscd under CardBus: config dir, driver copies, PID file and log under the state folder."""

    def __init__(self, readers: int = DEFAULT_READERS, base_port: int = DEFAULT_BASE_PORT,
                 home: Path | None = None) -> None:
        if readers < 1 or readers > 16:
            raise PcscError("readers must be between 1 and 16")
        self.readers = readers
        self.base_port = base_port
        self.home = home or sub_dir("pcscd")
        self.conf_dir = self.home / "reader.conf.d"
        self.driver_dir = self.home / "drivers"
        self.pid_file = self.home / "pcscd.pid"
        self.log_file = self.home / "pcscd.log"

    # -- prerequisites ------------------------------------------------------------------

    @staticmethod
    def check_installed() -> None:
        """Raise PcscError naming the Debian packages if pcscd or the vpcd driver is missing."""
        missing = []
        if shutil.which(PCSCD) is None and not Path("/usr/sbin/pcscd").exists():
            missing.append("pcscd")
        if not VPCD_DRIVER.exists():
            missing.append("vsmartcard-vpcd")
        if missing:
            raise PcscError(
                f"missing {', '.join(missing)}: install with "
                f"`apt-get install -y {' '.join(APT_PACKAGES)}` (make test does this)")

    # -- config -------------------------------------------------------------------------

    def write_config(self) -> list[VirtualReader]:
        """Write one reader entry per pair of slots, each with its own copy of the driver."""
        self.check_installed()
        for d in (self.conf_dir, self.driver_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        driver = VPCD_DRIVER.resolve()
        for entry in range((self.readers + 1) // 2):
            port = self.base_port + 2 * entry
            lib = self.driver_dir / f"libifdvpcd-{entry}.so"
            shutil.copy2(driver, lib)
            (self.conf_dir / f"cardbus-vpcd-{entry}.conf").write_text(
                f'FRIENDLYNAME "{READER_PREFIX} {entry}"\n'
                f"DEVICENAME /dev/null:{port}\n"
                f"LIBPATH {lib}\n"
                f"CHANNELID {port}\n")
        # An odd count still exposes both slots of the last entry.
        return virtual_readers(2 * ((self.readers + 1) // 2), self.base_port)

    # -- lifecycle ----------------------------------------------------------------------

    def pid(self) -> int | None:
        """The PID of the pcscd we started, if it is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and _is_pcscd(pid):
            return pid
        return None

    @staticmethod
    def foreign_pid() -> int | None:
        """A running pcscd not started by us (a system one), if any."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _is_pcscd(int(entry.name)):
                return int(entry.name)
        return None

    def start(self, *, debug: bool = False, wait: float = 10.0) -> int:
        """Start pcscd (if ours is not running) and wait until the virtual readers show up."""
        running = self.pid()
        if running:
            log.info("pcscd already running", pid=running)
            self.wait_ready(wait)
            return running
        other = self.foreign_pid()
        if other:
            raise PcscError(f"another pcscd (pid {other}) is running without our reader config;"
                            " stop it first (systemctl stop pcscd.socket pcscd)")
        readers = self.write_config()
        cmd = [shutil.which(PCSCD) or "/usr/sbin/pcscd", "--foreground", "-c", str(self.conf_dir)]
        if debug:
            cmd += ["--debug", "--apdu"]
        logf = self.log_file.open("ab")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        _CHILDREN[proc.pid] = proc  # keep the handle: reaped in stop(), no ResourceWarning
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("pcscd started", pid=proc.pid, readers=len(readers), conf=str(self.conf_dir))
        try:
            self.wait_ready(wait)
        except PcscError:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise PcscError(f"pcscd exited with {proc.returncode}; log tail:\n{tail}") from None
            raise
        return proc.pid

    def wait_ready(self, timeout: float = 10.0) -> list[str]:
        """Wait until PC/SC lists every virtual reader; return the reader names."""
        want = {r.name for r in virtual_readers(self.readers, self.base_port)}
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            seen = list_readers()
            if want <= set(seen):
                return seen
            time.sleep(0.1)
        raise PcscError(f"pcscd did not show readers {sorted(want - set(seen))} in {timeout}s"
                        f" (log: {self.log_file})")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop our pcscd by PID and wait until it is gone; False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if pid_alive(pid):
            log.warning("pcscd did not exit on SIGTERM, killing", pid=pid)
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()
        self.pid_file.unlink(missing_ok=True)
        log.info("pcscd stopped", pid=pid)
        return True

    def status(self) -> dict[str, object]:
        """PID, config and the readers PC/SC lists now."""
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "foreign_pid": None if pid else self.foreign_pid(),
            "conf_dir": str(self.conf_dir),
            "readers": list_readers() if pid or self.foreign_pid() else [],
        }


def list_readers() -> list[str]:
    """Reader names PC/SC lists now ([] when pcscd is not reachable)."""
    try:
        from smartcard.System import readers
        return [str(r) for r in readers()]
    except Exception:  # noqa: BLE001 - pyscard raises several types when pcscd is down
        return []


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        child.poll()
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_pcscd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "pcscd"
    except OSError:
        return False
