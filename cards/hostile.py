"""Misbehaving cards for failure tests: garbage, error status words, unknown AIDs, vanishing,
cards that never stop (61xx, 6Cxx), huge or endlessly nested answers, slow and mute cards."""

from __future__ import annotations

import functools
import secrets
import threading
import time
from typing import Literal

from cardbus.emv.data import PPSE_NAME
from cardbus.emv.tlv import tlv
from cards.applet import (
    SW_OK,
    Apdu,
    BaseApplet,
    CardVanished,
)

HostileMode = Literal["garbage", "error", "no_aid", "vanish", "more_data", "wrong_length",
                      "huge", "nested", "slow", "mute"]
UNSUPPORTED_AID = bytes.fromhex("A0000009999901")
HUGE_ANSWER = 0xFFFF - 2
"""The largest answer vpcd carries (a 2-byte length) less the status word."""


@functools.cache
def _nested(depth: int) -> bytes:
    """``depth`` FCI templates (6F) inside one another."""
    inner = tlv("84", PPSE_NAME)
    for _ in range(depth):
        inner = tlv("6F", inner)
    return inner


class HostileApplet(BaseApplet):
    """``garbage``: random bytes + 9000; ``error``: 6F00 to everything; ``no_aid``: a PPSE
    listing an AID no provider supports; ``vanish`` wraps a real applet and leaves the field
    at its first GENERATE AC; ``more_data``: 16 bytes and 61 10 (more data) to everything,
    GET RESPONSE included; ``wrong_length``: 6C 10 (wrong Le, use 16) to everything;
    ``huge``: a 65,533-byte answer + 9000; ``nested``: 6F templates nested 5,000 deep;
    ``slow`` wraps a real applet and takes ``delay`` seconds per answer; ``mute`` never answers
    a command (until ``release()``, or 60 s)."""

    def __init__(self, mode: HostileMode, inner: BaseApplet | None = None,
                 card_id: str = "hostile", delay: float = 0.2) -> None:
        super().__init__(card_id)
        self.mode = mode
        self.inner = inner
        self.delay = delay
        self.commands = 0
        self._released = threading.Event()

    def release(self) -> None:
        """Let a ``mute`` card's pending command end (it then answers 6F00)."""
        self._released.set()

    def power_on(self) -> None:
        super().power_on()
        if self.inner:
            self.inner.power_on()

    def power_off(self) -> None:
        super().power_off()
        if self.inner:
            self.inner.power_off()

    def command(self, apdu: Apdu) -> bytes:
        self.commands += 1
        fixed = self._fixed(apdu)
        if fixed is not None:
            return fixed
        if self.mode == "mute":
            self._released.wait(60)
            return bytes.fromhex("6F00")
        if self.mode == "no_aid":
            return self._no_aid(apdu)
        assert self.inner is not None
        if self.mode == "slow":
            time.sleep(self.delay)
        elif apdu.cla == 0x80 and apdu.ins == 0xAE:  # vanish
            raise CardVanished
        return self.inner.process(bytes([apdu.cla, apdu.ins, apdu.p1, apdu.p2])
                                  + (bytes([len(apdu.data)]) + apdu.data if apdu.data else b"")
                                  + (b"\x00" if apdu.le else b""))

    def _fixed(self, apdu: Apdu) -> bytes | None:
        """The answer of the modes that answer everything alike (None for the others)."""
        if self.mode == "garbage":
            return secrets.token_bytes(1 + secrets.randbelow(40)) + SW_OK
        if self.mode == "error":
            return bytes.fromhex("6F00")
        if self.mode == "more_data":
            return secrets.token_bytes(16) + bytes.fromhex("6110")
        if self.mode == "wrong_length":
            return bytes.fromhex("6C10")
        if self.mode == "huge":
            return bytes(HUGE_ANSWER) + SW_OK
        if self.mode == "nested":
            return _nested(5000) + SW_OK
        return None

    @staticmethod
    def _no_aid(apdu: Apdu) -> bytes:
        if apdu.ins == 0xA4 and apdu.data == PPSE_NAME:
            entry = tlv("61", tlv("4F", UNSUPPORTED_AID) + tlv("87", b"\x01"))
            return tlv("6F", tlv("84", PPSE_NAME) + tlv("A5", tlv("BF0C", entry))) + SW_OK
        if apdu.ins == 0xA4 and apdu.data == UNSUPPORTED_AID:
            return tlv("6F", tlv("84", UNSUPPORTED_AID)) + SW_OK
        return bytes.fromhex("6A82")
