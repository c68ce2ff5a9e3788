"""Run the real pcscd with a project-owned reader config of vpcd virtual readers.

One vpcd reader entry gives two readers (slots ``00 00`` and ``00 01``) on two TCP ports, so
``n`` readers need ``ceil(n / 2)`` entries, each with its **own copy** of the vpcd driver .so
(entries that share one LIBPATH clobber each other's slots). pcscd runs in the foreground
(``--foreground``), never with ``--auto-exit``, as a child we detach and stop by PID.

Virtual reader ``k`` (0-based) is reader entry ``k // 2``, slot ``k % 2``, listening on TCP port
``base_port + k``; its PC/SC name is ``"CardBus VPCD <k//2> 00 0<k%2>"``.

The card ports listen on 127.0.0.1 only. vpcd itself (Debian's vsmartcard-vpcd, built from
vsmartcard at its 2019 ACardEmulator-3.3 tag, and upstream today) binds them to INADDR_ANY
with no setting to change it: ``DEVICENAME /dev/null:PORT`` picks only the port, and
``DEVICENAME HOST:PORT`` is vpcd's "reversed" mode, where vpcd connects out to a card that
listens at HOST:PORT. That mode does not fit here: Debian's driver connects once, when pcscd
starts, and never again once that card is gone (vsmartcard issue #224, fixed upstream in 2022),
and the upstream fix still hands back a closed descriptor when the connect is refused. So
CardBus preloads a small ``bind()`` wrapper into its pcscd (``vpcd_loopback.c``, compiled with
the system's C compiler on first start) that turns a wildcard bind into a loopback bind, and
checks after start that every card port listens on loopback. ``listen_all=True``
(``cardbus pcscd start --listen-all``) keeps vpcd's own behaviour, for cards on other hosts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
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
LOOPBACK_SHIM_SOURCE = Path(__file__).with_name("vpcd_loopback.c")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
APT_PACKAGES = ("pcscd", "libpcsclite-dev", "pcsc-tools", "swig", "vsmartcard-vpcd")


class Pcscd:
    """pcscd under CardBus: config dir, driver copies, PID file and log under the state folder."""

    def __init__(self, readers: int = DEFAULT_READERS, base_port: int = DEFAULT_BASE_PORT,
                 home: Path | None = None, *, listen_all: bool = False) -> None:
        if readers < 1 or readers > 16:
            raise PcscError("readers must be between 1 and 16")
        self.readers = readers
        self.base_port = base_port
        self.listen_all = listen_all
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

    def loopback_shim(self) -> Path:
        """The ``bind()`` wrapper that keeps vpcd on loopback, compiled on first use."""
        out = self.home / "lib" / "vpcd-loopback.so"
        if out.exists() and out.stat().st_mtime >= LOOPBACK_SHIM_SOURCE.stat().st_mtime:
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise PcscError("no C compiler to build the loopback wrapper for vpcd's card ports: "
                            "install gcc (make setup does), or accept cards from other hosts "
                            "with --listen-all")
        tmp = out.with_suffix(".tmp")
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp),
                               str(LOOPBACK_SHIM_SOURCE), "-ldl"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PcscError(f"could not build {out.name}: {done.stderr.strip()[-500:]}")
        tmp.replace(out)
        return out

    def check_listeners(self) -> dict[int, set[str]]:
        """The addresses each card port listens on; ``PcscError`` if one is not loopback
        (unless ``listen_all``)."""
        ports = [r.port for r in virtual_readers(2 * ((self.readers + 1) // 2),
                                                 self.base_port)]
        found = tcp_listeners(ports)
        exposed = {p: a - LOOPBACK for p, a in found.items() if a - LOOPBACK}
        if exposed and not self.listen_all:
            raise PcscError(f"vpcd card ports listen beyond loopback: {exposed}")
        return found

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
            try:
                self.check_listeners()
            except PcscError as exc:
                log.warning("pcscd running with exposed card ports: restart it", error=str(exc))
            return running
        other = self.foreign_pid()
        if other:
            raise PcscError(f"another pcscd (pid {other}) is running without our reader config;"
                            " stop it first (systemctl stop pcscd.socket pcscd)")
        readers = self.write_config()
        cmd = [shutil.which(PCSCD) or "/usr/sbin/pcscd", "--foreground", "-c", str(self.conf_dir)]
        if debug:
            cmd += ["--debug", "--apdu"]
        env = dict(os.environ)
        if not self.listen_all:
            env["LD_PRELOAD"] = " ".join(filter(None, [str(self.loopback_shim()),
                                                       env.get("LD_PRELOAD")]))
        logf = self.log_file.open("ab")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
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
        try:
            self.check_listeners()
        except PcscError:
            self.stop()  # never leave card ports open that were meant to be closed
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


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6} (32-bit words in host order) as text."""
    raw = b"".join(int(text[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(text), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def tcp_listeners(ports: list[int]) -> dict[int, set[str]]:
    """For each of ``ports``, the local addresses a TCP socket listens on (from /proc/net)."""
    found: dict[int, set[str]] = {p: set() for p in ports}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            port = int(port_hex, 16)
            if fields[3] == "0A" and port in found:  # 0A: LISTEN
                found[port].add(_hex_address(address))
    return found


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
