"""Run one virtual card in a virtual reader as its own process (``cardbus cards insert``).

``python -m cards.serve <card_id> <reader_index>`` connects to the reader's vpcd
port and answers until SIGTERM (``cardbus cards remove``) or until pcscd drops it. The PID
file ``<state>/cards/run/reader-<k>.pid`` says which card sits in which reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from cardbus.cardprofile import CardProfile
from cardbus.crypto import quiet_tdes_warnings
from cardbus.errors import CardError, ConfigError
from cardbus.paths import sub_dir
from cardbus.processes import child_env
from cardbus.readers import DEFAULT_BASE_PORT, reader_for
from cards import applet_for
from cards.profile import load_profile
from cards.vpcd import VirtualCard


def run_dir() -> Path:
    return sub_dir("cards", "run")


def _pid_file(reader: int) -> Path:
    return run_dir() / f"reader-{reader}.json"


def inserted() -> dict[int, dict[str, object]]:
    """Cards sitting in readers now: reader index -> {card_id, pid}."""
    out: dict[int, dict[str, object]] = {}
    for path in sorted(run_dir().glob("reader-*.json")):
        info = json.loads(path.read_text())
        try:
            os.kill(int(info["pid"]), 0)
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)
            continue
        out[int(info["reader"])] = info
    return out


def insert(card_id: str, reader: int, base_port: int = DEFAULT_BASE_PORT) -> int:
    """Start the card process for ``card_id`` in ``reader``; returns its PID."""
    load_profile(card_id)  # fail early on an unknown card
    if reader in inserted():
        raise ConfigError(f"reader {reader} already holds a card; remove it first")
    env = dict(child_env(), PYTHONWARNINGS="ignore")  # a card holds no party's storage key
    proc = subprocess.Popen(
        [sys.executable, "-m", "cards.serve", card_id, str(reader), str(base_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, env=env)
    # The child writes its pid file once it is connected.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _pid_file(reader).exists():
            return proc.pid
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise CardError(f"card process exited: {err.strip()[-500:]}")
        time.sleep(0.02)
    proc.terminate()
    raise CardError(f"card {card_id} did not connect to reader {reader}")


def remove(reader: int) -> str | None:
    """Take the card out of ``reader`` (stop its process by PID); returns the card id."""
    info = inserted().get(reader)
    if info is None:
        return None
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    _pid_file(reader).unlink(missing_ok=True)
    return str(info["card_id"])


def serve_commands(conn: Connection, profile_json: str, home: str, port: int) -> None:
    """A card process driven over a pipe (``insert``, ``remove``, ``stop``), for benchmarks
    that tap one card many times: the card answers from its own process, as a card inserted
    with ``cardbus cards insert`` does, not from threads of the process it measures."""
    quiet_tdes_warnings()  # a spawned process: the parent's warning filters are not inherited
    applet = applet_for(CardProfile.model_validate_json(profile_json), Path(home))
    card = VirtualCard(applet, port)
    while True:
        command = conn.recv()
        try:
            if command == "insert":
                card.insert()
            elif command == "remove":
                card.remove()
            else:
                card.remove()
                conn.send("ok")
                return
        except OSError as exc:
            conn.send(f"{command} failed: {exc}")
            continue
        conn.send("ok")


def main(argv: list[str]) -> int:
    quiet_tdes_warnings()
    card_id, reader = argv[0], int(argv[1])
    base_port = int(argv[2]) if len(argv) > 2 else DEFAULT_BASE_PORT
    profile = load_profile(card_id)
    card = VirtualCard(applet_for(profile), reader_for(reader, base_port).port)
    card.connect()
    signal.signal(signal.SIGTERM, lambda *_: card.remove())
    _pid_file(reader).write_text(json.dumps({"pid": os.getpid(), "card_id": card_id,
                                             "reader": reader}))
    try:
        card.serve()
    finally:
        path = _pid_file(reader)
        if path.exists() and json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
