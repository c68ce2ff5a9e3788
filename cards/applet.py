"""What every virtual-card applet shares: APDU parsing, status words, GET UID, power state.

Applets are pure state machines (C-APDU bytes in, R-APDU bytes out, counters persisted through
``CardState``): no sockets, no PC/SC, so a load generator can drive them directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_BLOCKED = b"\x62\x83"  # selected file invalidated: a blocked application
SW_SECURITY = b"\x69\x82"
SW_CONDITIONS = b"\x69\x85"
SW_SM_DATA = b"\x69\x88"  # incorrect secure messaging data objects (a bad script MAC)
SW_WRONG_DATA = b"\x6a\x80"
SW_NOT_FOUND = b"\x6a\x82"
SW_RECORD_NOT_FOUND = b"\x6a\x83"
SW_WRONG_P1P2 = b"\x6a\x86"
SW_INS = b"\x6d\x00"
SW_CLA = b"\x6e\x00"
SW_MAC = b"\x93\x02"
SW_LIMIT = b"\x94\x01"

# ISO 14443-4 style ATR (historical bytes "CardBus").
DEFAULT_ATR = bytes.fromhex("3B8F8001") + b"CardBus-vICC." + b"\x00"


class CardVanished(Exception):
    """Raised by an applet to simulate the card leaving the field mid-command."""


@dataclass(frozen=True)
class Apdu:
    """A parsed C-APDU (short or extended)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @classmethod
    def parse(cls, raw: bytes) -> Apdu:
        if len(raw) < 4:
            raise ValueError("APDU shorter than 4 bytes")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2, b"", None)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        if body[0] == 0 and len(body) >= 3:  # extended
            lc = int.from_bytes(body[1:3], "big")
            if len(body) == 3:
                return cls(cla, ins, p1, p2, b"", lc or 65536)
            data = body[3:3 + lc]
            rest = body[3 + lc:]
            return cls(cla, ins, p1, p2, data, int.from_bytes(rest, "big") if rest else None)
        lc = body[0]
        data = body[1:1 + lc]
        if len(data) != lc:
            raise ValueError("Lc does not match the data")
        rest = body[1 + lc:]
        return cls(cla, ins, p1, p2, data, (rest[0] or 256) if rest else None)


class BaseApplet:
    """Power state, GET UID (``FF CA``), APDU parsing; subclasses implement ``command``."""

    atr = DEFAULT_ATR

    def __init__(self, card_id: str) -> None:
        self.card_id = card_id
        self.uid = hashlib.sha256(card_id.encode()).digest()[:7]
        self.powered = False
        self.selected: str | None = None

    def power_on(self) -> None:
        self.powered = True
        self.reset_session()

    def power_off(self) -> None:
        self.powered = False
        self.reset_session()

    def reset_session(self) -> None:
        self.selected = None

    def process(self, raw: bytes) -> bytes:
        try:
            apdu = Apdu.parse(raw)
        except ValueError:
            return SW_WRONG_LENGTH
        if apdu.cla == 0xFF and apdu.ins == 0xCA and apdu.p1 == 0x00:
            return self.uid + SW_OK
        return self.command(apdu)

    def command(self, apdu: Apdu) -> bytes:  # pragma: no cover - abstract
        return SW_INS
