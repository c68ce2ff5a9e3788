"""An EMV-style contactless payment applet (online-only, TDES cryptograms, DDA-like auth).

Commands: SELECT PPSE, SELECT AID, GET PROCESSING OPTIONS (PDOL), READ RECORD (AFL), INTERNAL
AUTHENTICATE (card signs the terminal's unpredictable number and the transaction ATC with its
private key, certified by the provider), GENERATE AC (first: ARQC, the ATC incremented and
persisted before the answer; second: checks the issuer's ARPC and answers TC or AAC),
GET DATA ATC. Issuer scripts (EMV Book 3 6.5, secure messaging format 2): APPLICATION BLOCK
(``84 1E``) and APPLICATION UNBLOCK (``84 18``), accepted after the first GENERATE AC of the
session with a MAC under the session key of that transaction's cryptogram
(``cardbus.crypto.issuer_script``); a wrong MAC answers '6988' and is counted. A blocked
application answers SELECT with its FCI and '6283' and every GENERATE AC with an AAC; the
block persists in the card's state.

``arqc_data`` is the one definition of what the ARQC covers, used by the card, the terminal and
the provider: CDOL1 data || AIP || ATC.
"""

from __future__ import annotations

import hmac

from cardbus.cardprofile import CardProfile
from cardbus.emv import cardcrypto
from cardbus.emv.data import (
    AFL,
    AIP,
    ARC_APPROVED,
    CDOL1,
    CDOL1_LEN,
    CDOL2,
    CDOL2_LEN,
    CID_AAC,
    CID_ARQC,
    CID_TC,
    CVR_ISSUER_AUTH_FAILED,
    CVR_ONLINE,
    PDOL,
    PPSE_NAME,
    arqc_data,
    iad,
)
from cardbus.emv.tlv import dol_encode, tlv
from cardbus.errors import MacInvalid
from cards.applet import (
    SW_BLOCKED,
    SW_CLA,
    SW_CONDITIONS,
    SW_INS,
    SW_NOT_FOUND,
    SW_OK,
    SW_RECORD_NOT_FOUND,
    SW_SM_DATA,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    BaseApplet,
)
from cards.profile import CardState


class EmvApplet(BaseApplet):
    """One payment application, personalised from a ``CardProfile``."""

    def __init__(self, profile: CardProfile, state: CardState) -> None:
        super().__init__(profile.card_id)
        self.profile = profile
        self.state = state
        self.aid = bytes.fromhex(profile.aid)
        self.icc_mk = bytes.fromhex(profile.icc_master_key)
        self._records = {
            (1, 1): tlv("70", tlv("5A", bytes.fromhex(_bcd_pan(profile.pan)))
                        + tlv("5F24", bytes.fromhex(profile.expiry))
                        + tlv("5F34", bytes.fromhex(profile.psn))
                        + tlv("8C", dol_encode(CDOL1)) + tlv("8D", dol_encode(CDOL2))),
            (1, 2): tlv("70", tlv("9F46", bytes.fromhex(profile.card_certificate))
                        + tlv("DF01", bytes.fromhex(profile.card_public_key))
                        + tlv("DF02", profile.pan_token.encode())
                        + tlv("DF03", profile.ca_key_id.encode())),
        }

    def reset_session(self) -> None:
        super().reset_session()
        self.gpo_done = False
        self.pdol: bytes = b""
        self.txn_atc: int | None = None
        self.session_key: bytes | None = None
        self.arqc: bytes | None = None
        self.script_context: tuple[int, bytes] | None = None  # (ATC, first AC) for scripts

    # -- dispatch -------------------------------------------------------------------------

    def command(self, apdu: Apdu) -> bytes:
        if apdu.cla not in (0x00, 0x80, 0x84):
            return SW_CLA
        handler = {
            (0x00, 0xA4): self._select,
            (0x80, 0xA8): self._gpo,
            (0x00, 0xB2): self._read_record,
            (0x00, 0x88): self._internal_authenticate,
            (0x80, 0xAE): self._generate_ac,
            (0x80, 0xCA): self._get_data,
            (0x84, 0x1E): self._issuer_script,
            (0x84, 0x18): self._issuer_script,
        }.get((apdu.cla, apdu.ins))
        if handler is None:
            return SW_INS
        return handler(apdu)

    def _select(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0x04:
            return SW_WRONG_P1P2
        self.reset_session()
        if apdu.data == PPSE_NAME:
            self.selected = "PPSE"
            entry = tlv("61", tlv("4F", self.aid) + tlv("50", self.profile.label.encode())
                        + tlv("87", b"\x01"))
            return tlv("6F", tlv("84", PPSE_NAME) + tlv("A5", tlv("BF0C", entry))) + SW_OK
        if apdu.data and self.aid.startswith(apdu.data):
            self.selected = "AID"
            prop = tlv("50", self.profile.label.encode()) + tlv("9F38", dol_encode(PDOL))
            return tlv("6F", tlv("84", self.aid) + tlv("A5", prop)) + (
                SW_BLOCKED if self.blocked else SW_OK)
        return SW_NOT_FOUND

    def _gpo(self, apdu: Apdu) -> bytes:
        if self.selected != "AID":
            return SW_CONDITIONS
        want = sum(n for _, n in PDOL)
        if len(apdu.data) < 2 or apdu.data[0] != 0x83 or apdu.data[1] != want \
                or len(apdu.data) != 2 + want:
            return SW_WRONG_LENGTH
        self.pdol = apdu.data[2:]
        self.gpo_done = True
        return tlv("77", tlv("82", AIP) + tlv("94", AFL)) + SW_OK

    def _read_record(self, apdu: Apdu) -> bytes:
        if not self.gpo_done:
            return SW_CONDITIONS
        if apdu.p2 & 0x07 != 0x04:
            return SW_WRONG_P1P2
        rec = self._records.get((apdu.p2 >> 3, apdu.p1))
        return rec + SW_OK if rec else SW_RECORD_NOT_FOUND

    def _internal_authenticate(self, apdu: Apdu) -> bytes:
        if not self.gpo_done:
            return SW_CONDITIONS
        if len(apdu.data) != 4:
            return SW_WRONG_LENGTH
        atc = self.state["atc"] + 1  # the ATC this transaction's GENERATE AC will use
        sig = cardcrypto.card_sign(bytes.fromhex(self.profile.card_private_key), apdu.data, atc)
        return tlv("77", tlv("9F4B", sig) + tlv("9F36", atc.to_bytes(2, "big"))) + SW_OK

    def _generate_ac(self, apdu: Apdu) -> bytes:
        if not self.gpo_done:
            return SW_CONDITIONS
        if self.arqc is None:
            return self._first_ac(apdu)
        return self._second_ac(apdu)

    def _first_ac(self, apdu: Apdu) -> bytes:
        if len(apdu.data) != CDOL1_LEN:
            return SW_WRONG_LENGTH
        atc = self.state["atc"] + 1
        if atc > 0xFFFF:
            return SW_CONDITIONS
        # Persisted before the cryptogram leaves the card; not fsynced: a lost increment (host
        # power loss) fails closed, the issuer refusing a repeated ATC as a replay.
        self.state.set(durable=False, atc=atc)
        self.txn_atc = atc
        self.session_key = cardcrypto.derive_session_key(self.icc_mk, atc)
        requested = apdu.p1 & 0xC0
        cid = CID_AAC if requested == CID_AAC or self.blocked else CID_ARQC
        ac = cardcrypto.generate_arqc(self.session_key, arqc_data(apdu.data, AIP, atc))
        self.script_context = (atc, ac)
        if cid == CID_ARQC:
            self.arqc = ac
        return self._ac_response(cid, atc, ac, CVR_ONLINE)

    def _second_ac(self, apdu: Apdu) -> bytes:
        assert self.session_key is not None and self.arqc is not None
        assert self.txn_atc is not None
        if len(apdu.data) != CDOL2_LEN:
            return SW_WRONG_LENGTH
        arc, issuer_auth = apdu.data[0:2], apdu.data[2:12]
        arpc, arpc_arc = issuer_auth[:8], issuer_auth[8:10]
        want = cardcrypto.generate_arpc_method1(self.session_key, self.arqc, arpc_arc)
        arpc_ok = hmac.compare_digest(want, arpc) and arc == arpc_arc
        approve = arpc_ok and arc == ARC_APPROVED and apdu.p1 & 0xC0 == CID_TC
        cvr = CVR_ONLINE if arpc_ok else CVR_ISSUER_AUTH_FAILED
        cid = CID_TC if approve else CID_AAC
        ac = cardcrypto.generate_arqc(self.session_key, arqc_data(apdu.data, AIP,
                                                                  self.txn_atc))
        self.arqc = None
        self.gpo_done = False  # the transaction is over
        return self._ac_response(cid, self.txn_atc, ac, cvr)

    @staticmethod
    def _ac_response(cid: int, atc: int, ac: bytes, cvr: bytes) -> bytes:
        return tlv("77", tlv("9F27", bytes([cid])) + tlv("9F36", atc.to_bytes(2, "big"))
                   + tlv("9F26", ac) + tlv("9F10", iad(cvr))) + SW_OK

    @property
    def blocked(self) -> bool:
        return bool(self.state.values.get("blocked", 0))

    def _issuer_script(self, apdu: Apdu) -> bytes:
        """APPLICATION BLOCK / UNBLOCK with its script MAC (bound to this session's ATC and
        first cryptogram)."""
        if self.script_context is None or not self.profile.icc_smi_key:
            return SW_CONDITIONS
        if apdu.p1 or apdu.p2:
            return SW_WRONG_P1P2
        atc, ac = self.script_context
        command = bytes([apdu.cla, apdu.ins, apdu.p1, apdu.p2, len(apdu.data)]) + apdu.data
        try:
            cardcrypto.verify_script_command(bytes.fromhex(self.profile.icc_smi_key), command,
                                             atc, ac)
        except MacInvalid:
            self.state.set(script_failures=self.state.values.get("script_failures", 0) + 1)
            return SW_SM_DATA
        self.state.set(blocked=1 if apdu.ins == 0x1E else 0)
        return SW_OK

    def _get_data(self, apdu: Apdu) -> bytes:
        if (apdu.p1, apdu.p2) == (0x9F, 0x36):
            return tlv("9F36", self.state["atc"].to_bytes(2, "big")) + SW_OK
        return SW_WRONG_DATA


def _bcd_pan(pan: str) -> str:
    return pan if len(pan) % 2 == 0 else pan + "F"
