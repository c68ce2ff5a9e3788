"""A multi-application card: one card (one vpcd connection) holding the issuer security domain,
the bank's EMV payment application and whatever the card manager installs (a transit purse).

SELECT by name routes among them (partial names select the first match, ISO 7816-4):
- the ISD's AID (or an empty name) selects the card manager; on a locked card it answers its
  FCI with '6283' and stays the only selectable application;
- ``2PAY.SYS.DDF01`` (PPSE) lists the payment application while it is selectable;
- an instance's AID selects it unless it (or the card) is locked ('6A82'); an e-purse that is
  installed but not yet personalised answers '6985'.
Every other command goes to the selected application; with none selected, '6985'. Selecting
ends the previous application's session (and any secure channel).

The registry, the security domain's counters and the installed applications' data persist in
``CardContent``; the EMV application keeps its own ``CardState``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cardbus.cardprofile import CardProfile
from cardbus.crypto import scp03
from cardbus.emv.data import PPSE_NAME
from cardbus.gp.card import (
    DGI_PURSE_LABEL,
    DGI_PURSE_LOAD_KEY,
    DGI_PURSE_NUMBER,
    DGI_PURSE_TAC_KEY,
    DGI_PURSE_TOKEN,
    ISD_AID,
    CardLife,
)
from cards.applet import (
    SW_BLOCKED,
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_OK,
    SW_WRONG_LENGTH,
    Apdu,
    BaseApplet,
)
from cards.content import CardContent, Instance, InstanceState
from cards.emv_applet import EmvApplet
from cards.isd import SecurityDomain
from cards.profile import CardState
from cards.transit_applet import TransitApplet


def purse_profile(card_id: str, inst: Instance) -> CardProfile:
    """The profile an installed e-purse runs with, from its STORE DATA personalisation."""
    perso = {int(k, 16): bytes.fromhex(v) for k, v in inst.perso.items()}
    return CardProfile(
        card_id=f"{card_id}/{inst.aid}", provider="installed", kind="transit", aid=inst.aid,
        label=perso.get(DGI_PURSE_LABEL, b"TRANSIT PURSE").decode("ascii", errors="replace"),
        pan=perso[DGI_PURSE_NUMBER].decode("ascii"),
        pan_token=perso[DGI_PURSE_TOKEN].decode("ascii"), expiry="301231",
        load_key=perso[DGI_PURSE_LOAD_KEY].hex().upper(),
        tac_key=perso[DGI_PURSE_TAC_KEY].hex().upper())


class MultiAppCard(BaseApplet):
    """A bank card with a GlobalPlatform card manager (profiles that carry ISD keys)."""

    def __init__(self, profile: CardProfile, home: Path | None = None,
                 state: CardState | None = None) -> None:
        super().__init__(profile.card_id)
        self.profile = profile
        self.content = CardContent.for_profile(profile, home)
        self.emv = EmvApplet(profile, state or CardState.for_profile(profile, home))
        keys = scp03.StaticKeys(bytes.fromhex(profile.isd_enc), bytes.fromhex(profile.isd_mac),
                                bytes.fromhex(profile.isd_dek), profile.isd_kvn)
        self.isd = SecurityDomain(self.content, keys, bytes.fromhex(profile.isd_kdd))
        self.current: Callable[[bytes], bytes] | None = None

    def reset_session(self) -> None:
        super().reset_session()
        self.current = None
        self.isd.reset()
        self.emv.reset_session()

    def process(self, raw: bytes) -> bytes:
        try:
            apdu = Apdu.parse(raw)
        except ValueError:
            return SW_WRONG_LENGTH
        if apdu.cla == 0xFF and apdu.ins == 0xCA and apdu.p1 == 0x00:
            return self.uid + SW_OK
        if (apdu.cla, apdu.ins, apdu.p1) == (0x00, 0xA4, 0x04):
            return self._select(apdu.data, raw)
        if self.current is None:
            return SW_CONDITIONS
        return self.current(raw)

    def _select(self, name: bytes, raw: bytes) -> bytes:
        self.reset_session()
        if not name or ISD_AID.startswith(name):
            self.current = self.isd.process
            return self.isd.select()
        if self.content.doc.life == CardLife.CARD_LOCKED:
            return SW_NOT_FOUND
        if name == PPSE_NAME:
            if not any(i.kind == "emv" and not i.locked for i in self.content.doc.instances):
                return SW_NOT_FOUND
            return self._route(self.emv.process, raw)
        inst = self.content.find(name)
        if inst is None or inst.locked:
            return SW_NOT_FOUND
        if inst.kind == "emv":
            return self._route(self.emv.process, raw)
        if not inst.personalised:
            return SW_CONDITIONS
        purse = TransitApplet(purse_profile(self.card_id, inst),
                              InstanceState(self.content, inst, balance=0, online_seq=0))
        return self._route(purse.process, raw)

    def _route(self, process: Callable[[bytes], bytes], raw: bytes) -> bytes:
        resp = process(raw)
        if resp[-2:] in (SW_OK, SW_BLOCKED):
            self.current = process
        return resp
