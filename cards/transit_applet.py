"""A transit e-purse applet (PBOC-style load): balance, load initialisation, load.

- ``80 5C 00 02 04`` GET BALANCE -> balance (4 bytes, minor units);
- ``80 50 00 02 Lc`` INITIALIZE FOR LOAD: key index (1) | amount (4) | terminal id (ASCII,
  1-32; the MACs cover its SHA-256 prefix, see ``cardbus.crypto.transit``) ->
  balance (4) | online sequence (2) | key version (1) | algorithm (1) | random (4) | MAC1 (4);
- ``80 52 00 00 0B`` CREDIT FOR LOAD: date-time (7, BCD YYYYMMDDhhmmss) | MAC2 (4) -> TAC (4),
  the card's
  proof of load. A bad MAC2 answers ``9302`` and leaves the balance alone.

Balance and online sequence persist in the card's state file across insertions.
"""

from __future__ import annotations

import secrets

from cardbus.cardprofile import CardProfile
from cardbus.emv import cardcrypto
from cardbus.emv.data import CARD_TOKEN_TAG
from cardbus.emv.tlv import tlv
from cardbus.errors import MacInvalid
from cards.applet import (
    SW_CLA,
    SW_CONDITIONS,
    SW_INS,
    SW_LIMIT,
    SW_MAC,
    SW_NOT_FOUND,
    SW_OK,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    BaseApplet,
)
from cards.profile import CardState

MAX_BALANCE = 100_000_00  # 100,000.00 in minor units
KEY_VERSION, ALG_ID = 0x01, 0x02


class TransitApplet(BaseApplet):
    """An e-purse personalised from a transit ``CardProfile``."""

    def __init__(self, profile: CardProfile, state: CardState,
                 random_source: object = None) -> None:
        super().__init__(profile.card_id)
        self.profile = profile
        self.state = state
        self.aid = bytes.fromhex(profile.aid)
        self.load_key = bytes.fromhex(profile.load_key)
        self.tac_key = bytes.fromhex(profile.tac_key)
        self._random = random_source or (lambda: secrets.token_bytes(4))

    def reset_session(self) -> None:
        super().reset_session()
        self.pending: tuple[int, str, bytes, int] | None = None  # amount, term, random, seq

    def command(self, apdu: Apdu) -> bytes:
        if (apdu.cla, apdu.ins) == (0x00, 0xA4):
            return self._select(apdu)
        if apdu.cla != 0x80:
            return SW_CLA
        if self.selected != "AID":
            return SW_CONDITIONS
        if apdu.ins == 0x5C:
            if apdu.p2 != 0x02:
                return SW_WRONG_P1P2
            return self.state["balance"].to_bytes(4, "big") + SW_OK
        if apdu.ins == 0x50:
            return self._init_load(apdu)
        if apdu.ins == 0x52:
            return self._credit(apdu)
        return SW_INS

    def _select(self, apdu: Apdu) -> bytes:
        self.reset_session()
        if apdu.p1 == 0x04 and apdu.data and self.aid.startswith(apdu.data):
            self.selected = "AID"
            prop = (tlv("50", self.profile.label.encode())
                    + tlv("9F0C", self.profile.pan.encode())
                    + tlv(CARD_TOKEN_TAG, self.profile.pan_token.encode()))
            return tlv("6F", tlv("84", self.aid) + tlv("A5", prop)) + SW_OK
        self.selected = None
        return SW_NOT_FOUND

    def _init_load(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0x00 or apdu.p2 != 0x02:
            return SW_WRONG_P1P2
        if not 6 <= len(apdu.data) <= 37:
            return SW_WRONG_LENGTH
        amount = int.from_bytes(apdu.data[1:5], "big")
        terminal = apdu.data[5:].decode("ascii", errors="replace")
        balance, seq = self.state["balance"], self.state["online_seq"]
        if amount == 0 or balance + amount > MAX_BALANCE:
            return SW_LIMIT
        rnd: bytes = self._random()  # type: ignore[operator]
        mac1 = cardcrypto.card_load_mac1(self.load_key, rnd, seq, balance, amount, terminal)
        self.pending = (amount, terminal, rnd, seq)
        return (balance.to_bytes(4, "big") + seq.to_bytes(2, "big")
                + bytes([KEY_VERSION, ALG_ID]) + rnd + mac1 + SW_OK)

    def _credit(self, apdu: Apdu) -> bytes:
        if self.pending is None:
            return SW_CONDITIONS
        if len(apdu.data) != 11:
            return SW_WRONG_LENGTH
        amount, terminal, rnd, seq = self.pending
        stamp, mac2 = apdu.data[:7].hex(), apdu.data[7:]
        self.pending = None
        try:
            cardcrypto.verify_operator_mac2(self.load_key, rnd, seq, amount, terminal, stamp,
                                            mac2)
        except MacInvalid:
            return SW_MAC
        new_balance = self.state["balance"] + amount
        self.state.set(balance=new_balance, online_seq=seq + 1)
        tac = cardcrypto.card_tac(self.tac_key, new_balance, seq, amount, terminal, stamp)
        return tac + SW_OK
