"""The vpcd card ports are reachable from this machine only.

vpcd binds its card sockets to every interface and has no setting for it; CardBus's pcscd
preloads ``reader_agent/vpcd_loopback.c`` to make those binds loopback binds. The first test
checks the wrapper itself (no pcscd), the second the running pcscd's card ports: listening on
loopback only (read from the kernel's socket table), refused on this machine's other
addresses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from reader_agent.pcscd import LOOPBACK, Pcscd, VirtualReader, tcp_listeners


def _outside_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_wrapper_turns_a_wildcard_bind_into_a_loopback_bind(tmp_path: Path) -> None:
    shim = Pcscd(home=tmp_path).loopback_shim()
    probe = ("import socket\n"
             "for family, host in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET, '127.0.0.1'),"
             " (socket.AF_INET6, '::')):\n"
             "    s = socket.socket(family, socket.SOCK_STREAM)\n"
             "    s.bind((host, 0))\n"
             "    print(s.getsockname()[0])\n")
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True, timeout=30).stdout.split()
    assert out == ["127.0.0.1", "127.0.0.1", "::1"]
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    assert plain == ["0.0.0.0", "127.0.0.1", "::"]  # noqa: S104 - the wildcard, unwrapped


@pytest.mark.pcsc
def test_card_ports_listen_on_loopback_only(pcscd: list[VirtualReader]) -> None:
    listeners = tcp_listeners([r.port for r in pcscd])
    for reader in pcscd:
        assert listeners[reader.port], f"nothing listens on {reader.port}"
        assert listeners[reader.port] <= LOOPBACK, (reader, listeners[reader.port])
    outside = _outside_addresses()
    if not outside:
        pytest.skip("this machine has no address besides loopback to try from")
    for address in outside:
        for reader in pcscd:
            with pytest.raises(ConnectionRefusedError), \
                    socket.create_connection((address, reader.port), timeout=5):
                pass
