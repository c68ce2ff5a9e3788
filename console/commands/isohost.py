"""``cardbus iso-host start|stop|status|fetch``: the local ISO 8583 bank host (jPOS).

The host (``deploy/iso-host``: its POM and Java sources) is an independent implementation of a
bank authorization host on jPOS 2.1.10, which the ``bank-iso`` bridge talks to. Here it is
fetched (Maven, into ``<state>/iso-host/libs``; ``~/.m2`` keeps the cache, so later fetches work
offline), compiled (``javac``, into ``<state>/iso-host/classes``, again only when the sources
change), started in the background with its PID and log under ``<state>/iso-host/``, handed its
keys on stdin (nothing in clear on disk), and waited for until its port answers; a start that
fails shows the log's tail.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.providers.iso8583.cardfile import card_file_path
from agents.providers.iso8583.hsm import bridge_hsm
from cardbus.errors import IsoHostError
from cardbus.paths import REPO_ROOT, state_dir
from cardbus.processes import pid_alive
from cardbus.settings import DEFAULT_ISO_PORT, settings
from console.commands.reader import _sub
from streams.broker import java_binary

HOST_DIR = REPO_ROOT / "deploy" / "iso-host"
POM = HOST_DIR / "pom.xml"
MAIN = "dev.cardbus.isohost.CardBusIsoHost"
DEFAULT_PORT = DEFAULT_ISO_PORT
PROVIDER = "bank-iso"
START_TIMEOUT_S = 60.0
JVM_OPTS = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true")

Progress = Callable[[str], None]
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # hosts this process started (reaped on stop)


def _quiet(_msg: str) -> None:
    return None


def host_home(home: Path | None = None) -> Path:
    """The host's folder: ``<state>/iso-host``."""
    path = (home or state_dir()) / "iso-host"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sources() -> list[Path]:
    return sorted((HOST_DIR / "src").rglob("*.java"))


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def build(home: Path | None = None, progress: Progress = _quiet) -> tuple[Path, Path]:
    """Fetch jPOS (Maven) and compile the host (javac), each only when its inputs changed.
    Returns ``(libs, classes)``. The jars live in ``CARDBUS_ISO_HOST_LIBS`` and the classes in
    ``CARDBUS_ISO_HOST_CLASSES`` if set (shared by test homes), else under the state folder."""
    base = host_home(home)
    libs = settings().iso_host_libs or base / "libs"
    marker = libs / f".fetched-{_digest([POM])}"
    if not marker.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise IsoHostError("Maven (mvn) is not installed: run `make setup`")
        shutil.rmtree(libs, ignore_errors=True)
        libs.mkdir(parents=True)
        progress(f"fetching jPOS from Maven Central into {libs} ...")
        proc = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                               f"-DoutputDirectory={libs}"], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise IsoHostError(f"fetching jPOS failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        marker.touch()
    classes = settings().iso_host_classes or base / "classes"
    stamp = classes / f".built-{_digest([POM, *_sources()])}"
    if not stamp.exists():
        javac = _javac()
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        progress("compiling the ISO 8583 host ...")
        proc = subprocess.run([javac, "-nowarn", "-encoding", "UTF-8", "-cp", f"{libs}/*",
                               "-d", str(classes), *map(str, _sources())],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise IsoHostError(f"compiling the ISO 8583 host failed:\n{proc.stderr[-3000:]}")
        stamp.touch()
    return libs, classes


def _javac() -> str:
    java = Path(java_binary())
    for candidate in (java.resolve().parent / "javac", shutil.which("javac")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise IsoHostError("javac is not installed: the host is compiled from source "
                       "(apt-get install openjdk-17-jdk-headless, or `make setup`)")


@dataclass
class HostState:
    """A running (or last started) host: saved as ``host.json`` next to its log."""

    pid: int
    port: int
    log: str

    @classmethod
    def load(cls, home: Path | None = None) -> HostState | None:
        path = host_home(home) / "host.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, home: Path | None = None) -> None:
        (host_home(home) / "host.json").write_text(json.dumps(asdict(self)))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def status(home: Path | None = None) -> HostState | None:
    """The host if it runs."""
    state = HostState.load(home)
    return state if state is not None and pid_alive(state.pid) else None


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def log_tail(home: Path | None = None, lines: int = 40) -> str:
    path = host_home(home) / "host.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])


def start(home: Path | None = None, *, port: int = DEFAULT_PORT, progress: Progress = _quiet,
          timeout_s: float = START_TIMEOUT_S) -> tuple[HostState, bool]:
    """Start the host unless it runs; ``(state, started)``."""
    running = status(home)
    if running is not None:
        return running, False
    if port_answers(port):
        raise IsoHostError(f"port {port} on 127.0.0.1 is in use: choose another with --port")
    libs, classes = build(home, progress)
    hsm = bridge_hsm(PROVIDER, home)
    keys = "".join(f"{k}={v}\n" for k, v in hsm.host_key_components().items())
    log = host_home(home) / "host.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [java_binary(), *JVM_OPTS, "-cp", f"{libs}/*:{classes}", MAIN, str(port),
             str(card_file_path(home))],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=host_home(home))
    _CHILDREN[proc.pid] = proc
    assert proc.stdin is not None
    proc.stdin.write(keys.encode())
    proc.stdin.close()
    del keys
    state = HostState(pid=proc.pid, port=port, log=str(log))
    state.save(home)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            raise IsoHostError(f"the ISO 8583 host exited during start-up "
                               f"(code {proc.returncode}).\n{log_tail(home)}")
        if port_answers(port):
            return state, True
        time.sleep(0.1)
    _terminate(proc.pid)
    raise IsoHostError(f"the ISO 8583 host did not answer on port {port} within "
                       f"{timeout_s:.0f}s.\n{log_tail(home)}")


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)


def stop(home: Path | None = None) -> HostState | None:
    """Stop the host by its PID; the state it had, or None if none ran."""
    state = status(home)
    if state is None:
        return None
    _terminate(state.pid)
    return state


def free_port() -> int:
    """A free loopback port (for tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the command --------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "iso-host", help="start, stop or inspect the local ISO 8583 bank host (jPOS)",
        description=("The bank-iso provider's authorization host: jPOS 2.1.10 from Maven "
                     "Central on Java 17, ISO 8583:1987 over TCP (2-byte length prefix) on "
                     "127.0.0.1. State, PID and log live under .cardbus/iso-host. Needs "
                     "`cardbus setup` first (the bridge's keys)."))
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    st = actions.add_parser("start", help="start the host and wait until its port answers")
    st.add_argument("--port", type=int, default=settings().iso_port,
                    help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT} or $CARDBUS_ISO_PORT)")
    st.set_defaults(func=_start)
    actions.add_parser("stop", help="stop the host").set_defaults(func=_stop)
    actions.add_parser("status", help="say whether the host runs").set_defaults(func=_status)
    actions.add_parser("fetch", help="only fetch jPOS and compile the host").set_defaults(
        func=_fetch)
    bench = _sub(sub, "bench", "benchmarks").add_parser(
        "iso", help="the bank-iso bridge's rate and latency against the jPOS host",
        description=("Start a jPOS host in a throw-away state folder, make software-card "
                     "requests, and run them through the bridge's handler over one ISO 8583 "
                     "link with a window in flight (no Kafka in the loop): requests/s and "
                     "p50/p95/p99 latency."))
    bench.add_argument("--requests", type=int, default=3_000)
    bench.add_argument("--window", type=int, default=64, help="requests in flight")
    bench.add_argument("--cards", type=int, default=100)
    bench.add_argument("--warmup", type=int, default=200)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=_bench)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    state, started = start(port=args.port, progress=_say)
    verb = "started" if started else "already running"
    print(f"ISO 8583 host {verb} at {state.address} (pid {state.pid}, log {state.log})")
    print(f"export CARDBUS_ISO_HOST={state.address}")
    return 0


def _stop(_args: argparse.Namespace) -> int:
    state = stop()
    print("ISO 8583 host not running: nothing to stop" if state is None
          else f"ISO 8583 host stopped (pid {state.pid})")
    return 0


def _status(_args: argparse.Namespace) -> int:
    state = status()
    if state is None:
        print("ISO 8583 host not running: start it with `cardbus iso-host start`")
        return 3
    print(f"ISO 8583 host running at {state.address} (pid {state.pid}, log {state.log})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bench.iso import IsoBenchOptions, prepare, run, text

    opts = IsoBenchOptions(requests=args.requests, window=args.window, cards=args.cards,
                           warmup=args.warmup)
    shared_libs = host_home() / "libs"  # the jars `make setup` fetched, if any
    if shared_libs.exists():
        os.environ.setdefault("CARDBUS_ISO_HOST_LIBS", str(shared_libs))
    with tempfile.TemporaryDirectory(prefix="cardbus-bench-iso-") as tmp:
        home = Path(tmp)
        world = prepare(home)
        state, _ = start(home, port=free_port(), progress=_say)
        try:
            result = run(world, home, state.port, opts, host_pid=state.pid)
        finally:
            stop(home)
    print(json.dumps(result) if args.json else text(result))
    return 0 if not result["timed_out"] else 1


def _fetch(_args: argparse.Namespace) -> int:
    libs, classes = build(progress=_say)
    print(f"jPOS in {libs}, host classes in {classes}")
    return 0
