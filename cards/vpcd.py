"""The card side of the vpcd socket protocol: a virtual card that pcscd sees as a real one.

Wire format, both ways: a 2-byte big-endian length, then the payload. A 1-byte payload from
vpcd is a control byte (``00`` power off, ``01`` power on, ``02`` reset, ``04`` get ATR, which
is answered with the ATR); anything longer is a C-APDU, answered with the R-APDU. Inserting a
card is connecting to the reader's port; removing it is closing the socket.

``TCP_QUICKACK`` is set before every read: vpcd writes length and payload as two segments, and
without it every APDU waits ~48 ms for a delayed ACK.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Protocol

from cardbus.logs import get_logger
from cards.applet import CardVanished

log = get_logger("reader_agent.vpcd")

POWER_OFF, POWER_ON, RESET, GET_ATR = 0x00, 0x01, 0x02, 0x04
SW_INS_NOT_SUPPORTED = bytes.fromhex("6D00")


class Applet(Protocol):
    """What a virtual card runs: transport-free APDU processing."""

    atr: bytes

    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def process(self, apdu: bytes) -> bytes: ...


def _quickack(sock: socket.socket) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        _quickack(sock)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


class VirtualCard:
    """One applet served on one vpcd reader port; ``insert()`` connects, ``remove()`` closes."""

    def __init__(self, applet: Applet, port: int, host: str = "127.0.0.1") -> None:
        self.applet = applet
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.apdus = 0

    def connect(self, timeout: float = 5.0) -> socket.socket:
        """Open the socket to vpcd (the tap)."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _quickack(sock)
        self._sock = sock
        return sock

    def serve(self) -> None:
        """Answer vpcd until the socket closes or ``remove()`` is called (blocking)."""
        sock = self._sock or self.connect()
        try:
            while not self._stop.is_set():
                head = _recv_exact(sock, 2)
                if head is None:
                    break
                (length,) = struct.unpack(">H", head)
                payload = _recv_exact(sock, length) if length else b""
                if payload is None:
                    break
                reply = self.handle(payload)
                if reply is not None:
                    _quickack(sock)
                    _send(sock, reply)
        except CardVanished:
            log.info("card left the field mid-command", port=self.port)
        except OSError:
            pass  # removed (socket closed under us) or pcscd went away
        finally:
            self._close()

    def handle(self, payload: bytes) -> bytes | None:
        """One message from vpcd -> the reply (None for control bytes that get none)."""
        if len(payload) == 1:
            ctrl = payload[0]
            if ctrl == GET_ATR:
                return self.applet.atr
            if ctrl == POWER_OFF:
                self.applet.power_off()
            elif ctrl in (POWER_ON, RESET):
                self.applet.power_on()
            return None
        self.apdus += 1
        try:
            return self.applet.process(payload)
        except CardVanished:
            raise
        except Exception as exc:  # noqa: BLE001 - a buggy applet answers like a faulty card
            log.error("applet fault", error=str(exc), port=self.port)
            return bytes.fromhex("6F00")

    def insert(self) -> VirtualCard:
        """Connect and serve in a daemon thread; returns self."""
        self._stop.clear()
        self.connect()
        self._thread = threading.Thread(target=self.serve, name=f"vcard-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        """Take the card out: close the socket and wait for the thread."""
        self._stop.set()
        self._close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def inserted(self) -> bool:
        return self._sock is not None
