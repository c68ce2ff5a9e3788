"""The security domain's content management, as functions over ``CardContent``: each checks
its command's data, changes the registry and persists it before the card answers, or returns
the status word that refuses it (GP Card Specification v2.3 chapter 11)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardbus.errors import CardError
from cardbus.gp import ber
from cardbus.gp.card import (
    APP_PRIVILEGES,
    DGI_PURSE_LABEL,
    DGI_PURSE_LOAD_KEY,
    DGI_PURSE_NUMBER,
    DGI_PURSE_TAC_KEY,
    DGI_PURSE_TOKEN,
    ISD_AID,
    ISD_PRIVILEGES,
    LOAD_FILE_LOADED,
    LOAD_FILES,
    SET_STATUS_APP,
    SET_STATUS_CARD,
    STATUS_APPS,
    STATUS_ISD,
    STATUS_LOAD_FILES,
    STATUS_LOAD_FILES_MODULES,
    TAG_AID,
    TAG_ENTRY,
    TAG_LIFE,
    TAG_LOAD_FILE,
    TAG_MODULE,
    TAG_PRIVILEGES,
    AppLife,
    CardLife,
    Sw,
)
from cards.content import CardContent, Instance


def _entry(*fields: tuple[int, bytes]) -> bytes:
    return ber.tlv(TAG_ENTRY, b"".join(ber.tlv(t, v) for t, v in fields))


def status_entries(content: CardContent, p1: int, prefix: bytes) -> list[bytes] | None:
    """GET STATUS entries (E3 TLVs) for ``p1`` whose AID starts with ``prefix``; None for an
    unknown P1."""
    doc = content.doc
    if p1 == STATUS_ISD:
        found = [(ISD_AID, _entry((TAG_AID, ISD_AID), (TAG_LIFE, bytes([doc.life])),
                                  (TAG_PRIVILEGES, ISD_PRIVILEGES)))]
    elif p1 == STATUS_APPS:
        found = [(bytes.fromhex(i.aid), _entry(
            (TAG_AID, bytes.fromhex(i.aid)), (TAG_LIFE, bytes([i.life])),
            (TAG_PRIVILEGES, bytes.fromhex(i.privileges)),
            (TAG_LOAD_FILE, bytes.fromhex(i.load_file)))) for i in doc.instances]
    elif p1 in (STATUS_LOAD_FILES, STATUS_LOAD_FILES_MODULES):
        found = []
        for lf in (f for f in LOAD_FILES if f.aid.hex().upper() in doc.load_files):
            fields = [(TAG_AID, lf.aid), (TAG_LIFE, bytes([LOAD_FILE_LOADED]))]
            if p1 == STATUS_LOAD_FILES_MODULES:
                fields.append((TAG_MODULE, lf.module))
            found.append((lf.aid, _entry(*fields)))
    else:
        return None
    return [entry for aid, entry in found if aid.startswith(prefix)]


def _lvs(data: bytes, count: int) -> list[bytes]:
    """``count`` length-value fields filling ``data`` exactly; ``CardError`` otherwise."""
    out, i = [], 0
    for _ in range(count):
        if i >= len(data) or i + 1 + data[i] > len(data):
            raise CardError("truncated LV field")
        out.append(data[i + 1:i + 1 + data[i]])
        i += 1 + data[i]
    if i != len(data):
        raise CardError("trailing bytes after the LV fields")
    return out


def install(content: CardContent, data: bytes) -> int:
    """INSTALL [for install and make selectable] of an instance from a load file on the card."""
    elf, module, aid, privileges, params, token = _lvs(data, 6)
    doc = content.doc
    if doc.life != CardLife.SECURED:
        return Sw.CONDITIONS_NOT_SATISFIED
    load_file = next((f for f in LOAD_FILES if f.aid == elf
                      and elf.hex().upper() in doc.load_files), None)
    if load_file is None or load_file.module != module:
        return Sw.REFERENCED_DATA_NOT_FOUND
    if not 5 <= len(aid) <= 16 or token or privileges not in (APP_PRIVILEGES, b"\x00") \
            or ber.first(params, 0xC9) is None:
        return Sw.WRONG_DATA  # no security domains, no delegated management tokens
    taken = {i.aid for i in doc.instances} | set(doc.load_files) | {ISD_AID.hex().upper()}
    if aid.hex().upper() in taken:
        return Sw.WRONG_DATA
    doc.instances.append(Instance(aid=aid.hex().upper(), load_file=elf.hex().upper(),
                                  module=module.hex().upper(), kind=load_file.kind,
                                  life=AppLife.SELECTABLE))
    content.save()
    return Sw.OK


def personalisation_target(content: CardContent, data: bytes) -> Instance | Sw:
    """INSTALL [for personalization]: the instance the next STORE DATA go to."""
    _elf, _module, aid, _privileges, _params, _token = _lvs(data, 6)
    inst = content.instance(aid)
    if inst is None:
        return Sw.REFERENCED_DATA_NOT_FOUND
    if inst.kind != "transit" or inst.life != AppLife.SELECTABLE:
        return Sw.CONDITIONS_NOT_SATISFIED  # locked, already personalised, or not ours to do
    return inst


@dataclass
class Personalisation:
    """STORE DATA blocks received so far for one instance (applied at the last block)."""

    instance: Instance
    next_block: int = 0
    dgis: dict[int, bytes] = field(default_factory=dict)

    def add(self, tag: int, value: bytes) -> None:
        self.dgis[tag] = value


def personalise(content: CardContent, perso: Personalisation) -> int:
    """The last STORE DATA block: check the e-purse's DGIs, then personalise it at once."""
    dgis = perso.dgis
    number, token = dgis.get(DGI_PURSE_NUMBER, b""), dgis.get(DGI_PURSE_TOKEN, b"")
    if not number.isdigit() or not token.isascii() or not token \
            or len(dgis.get(DGI_PURSE_LOAD_KEY, b"")) != 16 \
            or len(dgis.get(DGI_PURSE_TAC_KEY, b"")) != 16:
        return Sw.WRONG_DATA
    inst = content.instance(bytes.fromhex(perso.instance.aid))
    if inst is None or inst.life != AppLife.SELECTABLE:
        return Sw.CONDITIONS_NOT_SATISFIED
    inst.perso = {f"{t:04X}": v.hex().upper() for t, v in dgis.items()
                  if t in (DGI_PURSE_NUMBER, DGI_PURSE_TOKEN, DGI_PURSE_LABEL,
                           DGI_PURSE_LOAD_KEY, DGI_PURSE_TAC_KEY)}
    inst.life = AppLife.PERSONALIZED
    inst.counters = {"balance": 0, "online_seq": 0}
    content.save()
    return Sw.OK


def set_status(content: CardContent, p1: int, p2: int, data: bytes) -> int:
    """SET STATUS: lock or unlock the card (P1 '80') or an application (P1 '40')."""
    doc = content.doc
    if p1 == SET_STATUS_CARD:
        if data not in (b"", ISD_AID):
            return Sw.WRONG_DATA
        moves = {CardLife.CARD_LOCKED: CardLife.SECURED, CardLife.SECURED: CardLife.CARD_LOCKED}
        if p2 not in moves:
            return Sw.WRONG_DATA  # no termination on these cards
        if doc.life != moves[CardLife(p2)]:
            return Sw.CONDITIONS_NOT_SATISFIED
        doc.life = p2
    elif p1 == SET_STATUS_APP:
        inst = content.instance(data)
        if inst is None:
            return Sw.CONDITIONS_NOT_SATISFIED if data == ISD_AID \
                else Sw.REFERENCED_DATA_NOT_FOUND
        if p2 not in (AppLife.LOCKED_BIT, 0x00):
            return Sw.WRONG_P1P2
        if inst.locked == bool(p2):
            return Sw.CONDITIONS_NOT_SATISFIED  # already in that state
        inst.life = inst.life | AppLife.LOCKED_BIT if p2 else inst.life & ~AppLife.LOCKED_BIT
    else:
        return Sw.WRONG_P1P2
    content.save()
    return Sw.OK


def delete(content: CardContent, aid: bytes, *, related: bool) -> int:
    """DELETE an instance, or a load file (with its instances when ``related``)."""
    doc = content.doc
    if aid == ISD_AID or doc.life != CardLife.SECURED:
        return Sw.CONDITIONS_NOT_SATISFIED
    key = aid.hex().upper()
    if content.instance(aid) is not None:
        doc.instances = [i for i in doc.instances if i.aid != key]
    elif key in doc.load_files:
        users = [i for i in doc.instances if i.load_file == key]
        if users and not related:
            return Sw.CONDITIONS_NOT_SATISFIED
        doc.instances = [i for i in doc.instances if i.load_file != key]
        doc.load_files = [f for f in doc.load_files if f != key]
    else:
        return Sw.REFERENCED_DATA_NOT_FOUND
    content.save()
    return Sw.OK
