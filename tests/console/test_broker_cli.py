"""`cardbus broker start|status|stop` on a real Kafka node in a throw-away folder."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import free_port_block

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def cardbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_start_status_stop_cycle(tmp_path: Path) -> None:
    home = str(tmp_path / "cluster")
    try:
        # --free-port: a busy machine's client connections may hold any loopback port
        started = cardbus("broker", "start", "--home", home, "--free-port", "--port",
                          str(free_port_block(1, start=41000)))
        assert started.returncode == 0, started.stderr
        match = re.search(r"broker started: 1 node\(s\) at 127\.0\.0\.1:(\d+)", started.stdout)
        assert match, started.stdout
        port = match.group(1)

        again = cardbus("broker", "start", "--home", home, "--port", port)
        assert again.returncode == 0
        assert "broker already running" in again.stdout

        status = cardbus("broker", "status", "--home", home)
        assert status.returncode == 0
        assert f"127.0.0.1:{port}" in status.stdout
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            pass
    finally:
        stopped = cardbus("broker", "stop", "--home", home)
    assert stopped.returncode == 0
    assert "broker stopped" in stopped.stdout

    assert "broker not running" in cardbus("broker", "stop", "--home", home).stdout
    down = cardbus("broker", "status", "--home", home)
    assert down.returncode == 3
    assert "broker not running" in down.stdout


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = cardbus("broker", "start", "--home", str(tmp_path / "c"), "--port", str(port))
    assert result.returncode == 1
    assert f"port(s) [{port}]" in result.stderr
    assert "in use" in result.stderr
