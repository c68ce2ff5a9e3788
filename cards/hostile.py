"""Misbehaving cards for failure tests: garbage, error status words, unknown AIDs, vanishing."""

from __future__ import annotations

import secrets
from typing import Literal

from cardbus.emv.data import PPSE_NAME
from cardbus.emv.tlv import tlv
from cards.applet import (
    SW_OK,
    Apdu,
    BaseApplet,
    CardVanished,
)

HostileMode = Literal["garbage", "error", "no_aid", "vanish"]
UNSUPPORTED_AID = bytes.fromhex("A0000009999901")


class HostileApplet(BaseApplet):
    """``garbage``: random bytes + 9000; ``error``: 6F00 to everything; ``no_aid``: a PPSE
    listing an AID no provider supports; ``vanish`` wraps a real applet and leaves the field
    at its first GENERATE AC."""

    def __init__(self, mode: HostileMode, inner: BaseApplet | None = None,
                 card_id: str = "hostile") -> None:
        super().__init__(card_id)
        self.mode = mode
        self.inner = inner

    def power_on(self) -> None:
        super().power_on()
        if self.inner:
            self.inner.power_on()

    def power_off(self) -> None:
        super().power_off()
        if self.inner:
            self.inner.power_off()

    def command(self, apdu: Apdu) -> bytes:
        if self.mode == "garbage":
            return secrets.token_bytes(1 + secrets.randbelow(40)) + SW_OK
        if self.mode == "error":
            return bytes.fromhex("6F00")
        if self.mode == "no_aid":
            if apdu.ins == 0xA4 and apdu.data == PPSE_NAME:
                entry = tlv("61", tlv("4F", UNSUPPORTED_AID) + tlv("87", b"\x01"))
                return tlv("6F", tlv("84", PPSE_NAME) + tlv("A5", tlv("BF0C", entry))) + SW_OK
            if apdu.ins == 0xA4 and apdu.data == UNSUPPORTED_AID:
                return tlv("6F", tlv("84", UNSUPPORTED_AID)) + SW_OK
            return bytes.fromhex("6A82")
        assert self.inner is not None
        if apdu.cla == 0x80 and apdu.ins == 0xAE:
            raise CardVanished
        return self.inner.process(bytes([apdu.cla, apdu.ins, apdu.p1, apdu.p2])
                                  + (bytes([len(apdu.data)]) + apdu.data if apdu.data else b"")
                                  + (b"\x00" if apdu.le else b""))
