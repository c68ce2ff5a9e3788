"""The plain commands a card manager sends, and parsers for the card's answers.

Commands are built in the clear with class '80'; ``cardbus.crypto.scp03.wrap_command``
protects them for the open channel. Formats: GP Card Specification v2.3 chapter 11 (INSTALL
Table 11-47, GET STATUS 11.4, SET STATUS 11.10, DELETE 11.2, STORE DATA 11.11 with DGIs as in
EMV CPS), Amendment D 7.1 (INITIALIZE UPDATE response).
"""

from __future__ import annotations

from dataclasses import dataclass

from cardbus.crypto import scp03
from cardbus.errors import CardError
from cardbus.gp import ber
from cardbus.gp.card import (
    APP_PRIVILEGES,
    CLA_GP,
    CLA_ISO,
    DGI_PURSE_LABEL,
    DGI_PURSE_LOAD_KEY,
    DGI_PURSE_NUMBER,
    DGI_PURSE_TAC_KEY,
    DGI_PURSE_TOKEN,
    INSTALL_AND_MAKE_SELECTABLE,
    INSTALL_FOR_PERSONALIZATION,
    SET_STATUS_APP,
    SET_STATUS_CARD,
    STORE_DGI,
    STORE_ENCRYPTED,
    STORE_LAST,
    TAG_AID,
    TAG_ENTRY,
    TAG_LIFE,
    TAG_LOAD_FILE,
    TAG_MODULE,
    TAG_PRIVILEGES,
    AppLife,
    CardLife,
    Ins,
)


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None
         ) -> bytes:
    """A short C-APDU."""
    return scp03.Command(cla, ins, p1, p2, data, le).encode()


def lv(value: bytes) -> bytes:
    if len(value) > 255:
        raise CardError("LV value longer than 255 bytes")
    return bytes([len(value)]) + value


# -- secure channel initiation -------------------------------------------------------------

def select(aid: bytes) -> bytes:
    return apdu(CLA_ISO, Ins.SELECT, 0x04, 0x00, aid, 0)


def initialize_update(host_challenge: bytes, key_version: int = 0) -> bytes:
    """INITIALIZE UPDATE (key version 0: the first available key set)."""
    return apdu(CLA_GP, Ins.INITIALIZE_UPDATE, key_version, 0x00, host_challenge, 0)


@dataclass(frozen=True)
class InitUpdateResponse:
    """Amendment D Table 7-2."""

    kdd: bytes
    key_version: int
    scp: int
    i: int
    card_challenge: bytes
    card_cryptogram: bytes
    sequence_counter: int | None

    @classmethod
    def parse(cls, data: bytes) -> InitUpdateResponse:
        if len(data) not in (29, 32):
            raise CardError(f"INITIALIZE UPDATE answer of {len(data)} bytes (29 or 32 expected)")
        seq = int.from_bytes(data[29:32], "big") if len(data) == 32 else None
        return cls(data[:10], data[10], data[11], data[12], data[13:21], data[21:29], seq)

    def encode(self) -> bytes:
        seq = b"" if self.sequence_counter is None else self.sequence_counter.to_bytes(3, "big")
        return (self.kdd + bytes([self.key_version, self.scp, self.i]) + self.card_challenge
                + self.card_cryptogram + seq)


def external_authenticate(level: int, host_cryptogram: bytes) -> bytes:
    """EXTERNAL AUTHENTICATE in the clear (``scp03.wrap_command(..., encrypt=False)`` MACs it)."""
    return apdu(CLA_GP, Ins.EXTERNAL_AUTHENTICATE, level, 0x00, host_cryptogram)


# -- GET STATUS ----------------------------------------------------------------------------

def get_status(p1: int, aid_prefix: bytes = b"", *, more: bool = False) -> bytes:
    """GET STATUS with the TLV answer format (P2 '02'; '03' asks for the next part)."""
    return apdu(CLA_GP, Ins.GET_STATUS, p1, 0x03 if more else 0x02,
                ber.tlv(TAG_AID, aid_prefix), 0)


@dataclass(frozen=True)
class RegistryEntry:
    """One entry of the card's registry as GET STATUS reports it."""

    aid: bytes
    life: int
    privileges: bytes = b""
    load_file: bytes | None = None
    modules: tuple[bytes, ...] = ()

    @property
    def locked(self) -> bool:
        return bool(self.life & AppLife.LOCKED_BIT) and self.life != CardLife.TERMINATED


def parse_status(data: bytes) -> list[RegistryEntry]:
    """The E3 entries of a GET STATUS answer."""
    entries = []
    for tag, value in ber.parse(data):
        if tag != TAG_ENTRY:
            raise CardError(f"GET STATUS: unexpected tag {tag:X}")
        fields = ber.parse(value)
        found = dict(fields)
        if TAG_AID not in found or len(found.get(TAG_LIFE, b"")) != 1:
            raise CardError("GET STATUS: entry lacks its AID or life cycle state")
        entries.append(RegistryEntry(
            aid=found[TAG_AID], life=found[TAG_LIFE][0],
            privileges=found.get(TAG_PRIVILEGES, b""), load_file=found.get(TAG_LOAD_FILE),
            modules=tuple(v for t, v in fields if t == TAG_MODULE)))
    return entries


# -- content management ----------------------------------------------------------------------

def install(load_file: bytes, module: bytes, instance: bytes,
            privileges: bytes = APP_PRIVILEGES, params: bytes = b"") -> bytes:
    """INSTALL [for install and make selectable]: an instance of ``module`` from
    ``load_file`` under the AID ``instance``; application parameters in tag C9."""
    data = (lv(load_file) + lv(module) + lv(instance) + lv(privileges)
            + lv(ber.tlv(0xC9, params)) + lv(b""))
    return apdu(CLA_GP, Ins.INSTALL, INSTALL_AND_MAKE_SELECTABLE, 0x00, data, 0)


def install_for_personalization(instance: bytes) -> bytes:
    """INSTALL [for personalization]: the STORE DATA that follow go to ``instance``."""
    data = lv(b"") + lv(b"") + lv(instance) + lv(b"") + lv(b"") + lv(b"")
    return apdu(CLA_GP, Ins.INSTALL, INSTALL_FOR_PERSONALIZATION, 0x00, data, 0)


def dgi(tag: int, value: bytes) -> bytes:
    """One Data Grouping Identifier: 2-byte tag, length (1 byte, or 'FF' + 2), value."""
    length = bytes([len(value)]) if len(value) < 0xFF else b"\xff" + len(value).to_bytes(2, "big")
    return tag.to_bytes(2, "big") + length + value


def parse_dgis(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        if i + 3 > len(data):
            raise CardError("truncated DGI")
        tag, n = int.from_bytes(data[i:i + 2], "big"), data[i + 2]
        i += 3
        if n == 0xFF:
            n, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        if i + n > len(data):
            raise CardError("DGI runs past the end of the data")
        out.append((tag, data[i:i + n]))
        i += n
    return out


def store_data(block: int, dgis: bytes, *, last: bool, encrypted: bool) -> bytes:
    p1 = STORE_DGI | (STORE_LAST if last else 0) | (STORE_ENCRYPTED if encrypted else 0)
    return apdu(CLA_GP, Ins.STORE_DATA, p1, block, dgis)


def purse_personalisation(dek: bytes, card_number: str, card_token: str, load_key: bytes,
                          tac_key: bytes, label: str = "TRANSIT PURSE") -> list[bytes]:
    """The STORE DATA commands that personalise an e-purse: its number, the operator's token
    of it and its label in the clear, its load and TAC keys encrypted under the security
    domain's Key-DEK."""
    clear = dgi(DGI_PURSE_NUMBER, card_number.encode("ascii")) \
        + dgi(DGI_PURSE_TOKEN, card_token.encode("ascii")) \
        + dgi(DGI_PURSE_LABEL, label.encode("ascii"))
    secret = dgi(DGI_PURSE_LOAD_KEY, scp03.encrypt_sensitive(dek, load_key)) \
        + dgi(DGI_PURSE_TAC_KEY, scp03.encrypt_sensitive(dek, tac_key))
    return [store_data(0, clear, last=False, encrypted=False),
            store_data(1, secret, last=True, encrypted=True)]


def set_status_app(instance: bytes, *, lock: bool) -> bytes:
    """SET STATUS of an application: lock (b8 set) or unlock."""
    return apdu(CLA_GP, Ins.SET_STATUS, SET_STATUS_APP, AppLife.LOCKED_BIT if lock else 0x00,
                instance)


def set_status_card(state: CardLife) -> bytes:
    """SET STATUS of the card: CARD_LOCKED, or back to SECURED."""
    return apdu(CLA_GP, Ins.SET_STATUS, SET_STATUS_CARD, state)


def delete(aid: bytes, *, related: bool = False) -> bytes:
    """DELETE an instance or a load file (``related``: with its instances)."""
    return apdu(CLA_GP, Ins.DELETE, 0x00, 0x80 if related else 0x00, ber.tlv(TAG_AID, aid), 0)
