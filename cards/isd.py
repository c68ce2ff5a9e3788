"""The issuer security domain (card manager) of a multi-application card.

GlobalPlatform Card Specification v2.3 with SCP03 (Amendment D), AES-128, "i" = '70'
(pseudo-random card challenge from a persisted sequence counter, R-MAC and R-ENCRYPTION
supported). Security levels '01', '03', '11', '13', '33' (C-MAC is always required).

Commands: SELECT (by the multi-application card), INITIALIZE UPDATE, EXTERNAL AUTHENTICATE,
then in the secure channel GET STATUS, INSTALL [for install and make selectable] and
[for personalization], STORE DATA, SET STATUS, DELETE.

Refusals: no open channel or an aborted one '6982'; a wrong C-MAC (tampered, replayed, out of
order) '6982', the channel aborted, counted in ``mac_failures``; EXTERNAL AUTHENTICATE with no
INITIALIZE UPDATE before it '6985'; a wrong host cryptogram '6300', counted: after
``AUTH_LIMIT`` consecutive failures INITIALIZE UPDATE answers '6983' for good. Unknown key
version or AID '6A88'; malformed data '6A80'; wrong P1/P2 '6A86'; a command in the wrong
state '6985'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cardbus.crypto import scp03
from cardbus.errors import CardError, SecureChannelError
from cardbus.gp import ber
from cardbus.gp.card import (
    ENCRYPTED_DGI,
    INSTALL_AND_MAKE_SELECTABLE,
    INSTALL_FOR_PERSONALIZATION,
    ISD_AID,
    STORE_ENCRYPTED,
    STORE_LAST,
    AppLife,
    CardLife,
    Ins,
    Sw,
)
from cardbus.gp.commands import parse_dgis
from cards import isd_content
from cards.content import CardContent

AUTH_LIMIT = 5
I_PARAM = scp03.I_PSEUDO_RANDOM | scp03.I_RMAC | scp03.I_RENC  # '70'
ISD_FCI_MAX_LEN = bytes.fromhex("9F6501FF")  # maximum length of data field in command message


@dataclass(frozen=True)
class _Pending:
    """Between INITIALIZE UPDATE and EXTERNAL AUTHENTICATE."""

    host_challenge: bytes
    card_challenge: bytes
    keys: scp03.SessionKeys


class SecurityDomain:
    """The ISD: the card's content (``CardContent``) and its SCP03 key set."""

    status_chunk = 200  # GET STATUS data per response (room for R-ENC padding and R-MAC)

    def __init__(self, content: CardContent, keys: scp03.StaticKeys, kdd: bytes) -> None:
        self.content = content
        self.keys = keys
        self.kdd = kdd
        self.reset()

    def reset(self) -> None:
        """Card reset, deselection or a new INITIALIZE UPDATE: the session ends."""
        self.pending: _Pending | None = None
        self.channel: scp03.Channel | None = None
        self.aborted = False
        self.perso: isd_content.Personalisation | None = None
        self.status_rest: list[bytes] = []

    def select(self) -> bytes:
        self.reset()
        fci = ber.tlv(0x6F, ber.tlv(0x84, ISD_AID) + ber.tlv(0xA5, ISD_FCI_MAX_LEN))
        locked = self.content.doc.life == CardLife.CARD_LOCKED
        return fci + (Sw.SELECTED_INVALIDATED if locked else Sw.OK).to_bytes(2, "big")

    # -- dispatch -----------------------------------------------------------------------

    def process(self, raw: bytes) -> bytes:
        try:
            cmd = scp03.Command.parse(raw)
        except SecureChannelError:
            return _sw(Sw.WRONG_LENGTH)
        if cmd.ins == Ins.INITIALIZE_UPDATE and cmd.cla == 0x80:
            return self._initialize_update(cmd)
        if cmd.ins == Ins.EXTERNAL_AUTHENTICATE and self.channel is None:
            return self._external_authenticate(raw, cmd)
        if self.channel is None:
            return _sw(Sw.SECURITY_NOT_SATISFIED)  # no secure channel, or an aborted one
        try:
            channel, plain = scp03.unwrap_command(self.channel, raw)
        except SecureChannelError:
            self._abort(mac_failure=cmd.cla & scp03.CLA_SM != 0)
            return _sw(Sw.SECURITY_NOT_SATISFIED)
        self.channel = channel
        data, sw = self._managed(plain)
        return scp03.wrap_response(channel, data, sw)

    def _abort(self, *, mac_failure: bool) -> None:
        self.reset()
        self.aborted = True
        if mac_failure:
            self.content.doc.mac_failures += 1
            self.content.save()

    def _managed(self, cmd: scp03.Command) -> tuple[bytes, int]:
        handlers: dict[int, Callable[[scp03.Command], tuple[bytes, int]]] = {
            Ins.GET_STATUS: self._get_status, Ins.INSTALL: self._install,
            Ins.STORE_DATA: self._store_data, Ins.SET_STATUS: self._set_status,
            Ins.DELETE: self._delete}
        handler = handlers.get(cmd.ins)
        if handler is None:
            return b"", Sw.INS_NOT_SUPPORTED
        if cmd.cla != 0x80:
            return b"", Sw.CLA_NOT_SUPPORTED
        try:
            return handler(cmd)
        except (CardError, SecureChannelError):  # malformed TLV, DGI or encrypted value
            return b"", Sw.WRONG_DATA

    # -- secure channel initiation --------------------------------------------------------

    def _initialize_update(self, cmd: scp03.Command) -> bytes:
        self.reset()
        doc = self.content.doc
        if doc.auth_failures >= AUTH_LIMIT:
            return _sw(Sw.AUTH_METHOD_BLOCKED)
        if cmd.p1 not in (0, self.keys.version):
            return _sw(Sw.REFERENCED_DATA_NOT_FOUND)
        if cmd.p2 != 0:
            return _sw(Sw.WRONG_P1P2)
        if len(cmd.data) != scp03.CHALLENGE_LEN:
            return _sw(Sw.WRONG_LENGTH)
        if doc.sequence_counter >= 0xFFFFFF:
            return _sw(Sw.CONDITIONS_NOT_SATISFIED)
        doc.sequence_counter += 1
        self.content.save()  # a challenge is never used twice, even across a power loss
        seq = doc.sequence_counter
        card_challenge = scp03.card_challenge(self.keys.enc, seq, ISD_AID)
        keys = scp03.session_keys(self.keys, cmd.data, card_challenge)
        self.pending = _Pending(cmd.data, card_challenge, keys)
        cryptogram = scp03.card_cryptogram(keys, cmd.data, card_challenge)
        return (self.kdd + bytes([self.keys.version, 0x03, I_PARAM]) + card_challenge
                + cryptogram + seq.to_bytes(3, "big") + _sw(Sw.OK))

    def _external_authenticate(self, raw: bytes, cmd: scp03.Command) -> bytes:
        pending, self.pending = self.pending, None
        if pending is None:
            return _sw(Sw.CONDITIONS_NOT_SATISFIED)
        if cmd.p1 not in scp03.LEVELS or cmd.p2 != 0:
            return _sw(Sw.WRONG_P1P2)
        try:
            channel, plain = scp03.unwrap_command(scp03.begin(pending.keys, cmd.p1), raw,
                                                  decrypt=False)
            scp03.verify_cryptogram(
                scp03.host_cryptogram(pending.keys, pending.host_challenge,
                                      pending.card_challenge), plain.data, "host cryptogram")
        except SecureChannelError:
            doc = self.content.doc
            doc.auth_failures += 1
            doc.auth_failures_total += 1
            self.content.save()
            self.aborted = True
            return _sw(Sw.AUTHENTICATION_FAILED)
        if self.content.doc.auth_failures:
            self.content.doc.auth_failures = 0
            self.content.save()
        self.channel = channel
        return _sw(Sw.OK)

    # -- content management -----------------------------------------------------------------

    def _get_status(self, cmd: scp03.Command) -> tuple[bytes, int]:
        if cmd.p2 == 0x03:
            if not self.status_rest:
                return b"", Sw.CONDITIONS_NOT_SATISFIED
            return self._status_part()
        if cmd.p2 != 0x02:
            return b"", Sw.WRONG_P1P2
        prefix = ber.first(cmd.data, 0x4F)
        if prefix is None:
            return b"", Sw.WRONG_DATA
        entries = isd_content.status_entries(self.content, cmd.p1, prefix)
        if entries is None:
            return b"", Sw.WRONG_P1P2
        if not entries:
            return b"", Sw.REFERENCED_DATA_NOT_FOUND
        self.status_rest = entries
        return self._status_part()

    def _status_part(self) -> tuple[bytes, int]:
        out = b""
        while self.status_rest and len(out) + len(self.status_rest[0]) <= self.status_chunk:
            out += self.status_rest.pop(0)
        return out, Sw.MORE_DATA if self.status_rest else Sw.OK

    def _install(self, cmd: scp03.Command) -> tuple[bytes, int]:
        if cmd.p1 == INSTALL_AND_MAKE_SELECTABLE:
            return b"\x00", isd_content.install(self.content, cmd.data)
        if cmd.p1 == INSTALL_FOR_PERSONALIZATION:
            target = isd_content.personalisation_target(self.content, cmd.data)
            if isinstance(target, Sw):
                return b"", target
            self.perso = isd_content.Personalisation(target)
            return b"\x00", Sw.OK
        return b"", Sw.WRONG_P1P2

    def _store_data(self, cmd: scp03.Command) -> tuple[bytes, int]:
        perso = self.perso
        if perso is None:
            return b"", Sw.CONDITIONS_NOT_SATISFIED
        if cmd.p2 != perso.next_block:
            self.perso = None  # a block missing or replayed: start personalisation again
            return b"", Sw.WRONG_P1P2
        encrypted = cmd.p1 & STORE_ENCRYPTED == STORE_ENCRYPTED
        for tag, value in parse_dgis(cmd.data):
            if bool(tag & ENCRYPTED_DGI) != encrypted:
                return b"", Sw.WRONG_DATA
            perso.add(tag, scp03.decrypt_sensitive(self.keys.dek, value) if encrypted
                      else value)
        perso.next_block += 1
        if cmd.p1 & STORE_LAST:
            self.perso = None
            return b"", isd_content.personalise(self.content, perso)
        return b"", Sw.OK

    def _set_status(self, cmd: scp03.Command) -> tuple[bytes, int]:
        return b"", isd_content.set_status(self.content, cmd.p1, cmd.p2, cmd.data)

    def _delete(self, cmd: scp03.Command) -> tuple[bytes, int]:
        aid = ber.first(cmd.data, 0x4F)
        if aid is None or cmd.p1 != 0 or cmd.p2 not in (0x00, 0x80):
            return b"", Sw.WRONG_DATA if aid is None else Sw.WRONG_P1P2
        sw = isd_content.delete(self.content, aid, related=cmd.p2 == 0x80)
        return (b"\x00" if sw == Sw.OK else b""), sw


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


__all__ = ["AUTH_LIMIT", "AppLife", "SecurityDomain"]
