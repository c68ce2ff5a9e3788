"""The terminal side of the card dialogue: EMV payment and transit e-purse.

Works over anything with ``transmit(apdu) -> (data, sw)``: a PC/SC ``CardLink`` (real pcscd,
virtual or real cards) or an ``AppletLink`` (an applet in process, for load generators).
Every step checks its status word; a bad one, a malformed answer or a vanished card raises
``CardError`` naming the step. Each public function is one card step: it calls ``link.begin()``
first, so a PC/SC link holds it to its deadline and byte budget (``reader_agent.pcsc``).
Nothing here talks to Kafka.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from cardbus.crypto.transit import card_time
from cardbus.emv import cardcrypto
from cardbus.emv.data import CARD_TOKEN_TAG, CID_ARQC, PPSE_NAME, arqc_data, cvr_from_iad
from cardbus.emv.tlv import dol, fill_dol, find, find_all
from cardbus.errors import CardError


class Link(Protocol):
    def begin(self) -> None: ...

    def transmit(self, apdu: bytes) -> tuple[bytes, int]: ...


class Applet(Protocol):
    """A card application driven in process (the virtual cards' applets satisfy it)."""

    def power_on(self) -> None: ...

    def process(self, apdu: bytes) -> bytes: ...


class AppletLink:
    """An applet driven directly, without PC/SC."""

    def __init__(self, applet: Applet) -> None:
        self.applet = applet
        applet.power_on()

    def begin(self) -> None:
        """A card step starts (an in-process applet has no deadline to keep)."""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        resp = self.applet.process(apdu)
        return resp[:-2], (resp[-2] << 8) | resp[-1]


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = 0) -> bytes:
    out = bytes([cla, ins, p1, p2])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le])
    return out


SW_OK, SW_APP_BLOCKED = 0x9000, 0x6283  # 6283: selected, but the application is blocked


def _call(link: Link, step: str, command: bytes) -> bytes:
    return _call_sw(link, step, command)[0]


def _call_sw(link: Link, step: str, command: bytes, ok: tuple[int, ...] = (SW_OK,)
             ) -> tuple[bytes, int]:
    try:
        data, sw = link.transmit(command)
    except CardError as exc:
        raise CardError(f"{step}: {exc}") from None
    if sw not in ok:
        raise CardError(f"{step}: card answered status {sw:04X}")
    return data, sw


MAX_COMMAND_DATA = 252
"""Data a terminal puts in one short command built from the card's data object lists (Lc is
one byte; GET PROCESSING OPTIONS wraps its data in a two-byte tag 83)."""


def _dol_data(step: str, items: list[tuple[str, int]], values: Mapping[str, bytes]) -> bytes:
    """A DOL filled with ``values``; a card whose DOL asks for more than a command holds is
    refused."""
    data = fill_dol(items, dict(values))
    if len(data) > MAX_COMMAND_DATA:
        raise CardError(f"{step}: the card's data object list asks for {len(data)} bytes "
                        f"(at most {MAX_COMMAND_DATA})")
    return data


def _tags(step: str, data: bytes, *required: str) -> dict[str, bytes]:
    try:
        tags = find(data)
    except CardError as exc:
        raise CardError(f"{step}: malformed answer ({exc})") from None
    missing = [t for t in required if t not in tags]
    if missing:
        raise CardError(f"{step}: answer lacks {', '.join(missing)}")
    return tags


@dataclass(frozen=True)
class Checkout:
    """What the terminal asks for: amount (minor units), ISO 4217 numeric currency (from
    ``cardbus.emv.data.currency_numeric``: an unknown currency is refused, never sent as
    another), country."""

    amount: int = 0
    currency_numeric: int = 156
    country_numeric: int = 156
    transaction_type: int = 0x00
    when: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class EmvTap:
    """What the dialogue learned from a payment card (the PAN stays in memory only)."""

    aid: str
    provider: str
    pan: str = field(repr=False)  # never in a repr (logs, tracebacks): masked_pan is
    psn: str
    expiry: str
    aip: bytes
    atc: int
    cid: int
    arqc: bytes
    iad: bytes
    cdol1_data: bytes
    unpredictable_number: bytes
    card_signature: bytes
    certificate: cardcrypto.CardCertificate
    cdol2: list[tuple[str, int]]
    blocked: bool = False  # the application answered SELECT with '6283' (issuer script block)

    @property
    def declined_by_card(self) -> bool:
        """The card's first GENERATE AC was an AAC: it ends the transaction itself (no second
        GENERATE AC), whatever the issuer answers."""
        return self.cid & 0xC0 != CID_ARQC

    @property
    def pan_token(self) -> str:
        return self.certificate.pan_token

    @property
    def masked_pan(self) -> str:
        return self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]

    @property
    def arqc_data(self) -> bytes:
        """The bytes the ARQC covers, for the provider to recompute."""
        return arqc_data(self.cdol1_data, self.aip, self.atc)


def _bcd(n: int, size: int) -> bytes:
    return bytes.fromhex(f"{n:0{size * 2}d}")


def select_application(link: Link, aids: Mapping[str, str]) -> tuple[str, str, bytes]:
    """SELECT PPSE, pick the best supported AID (priority), SELECT it -> (aid, provider, FCI).
    A blocked application's FCI comes with '6283' (``select_payment`` tells it apart)."""
    aid, provider, fci, _blocked = select_payment(link, aids)
    return aid, provider, fci


def select_payment(link: Link, aids: Mapping[str, str]) -> tuple[str, str, bytes, bool]:
    """``select_application``, and whether the application is blocked ('6283')."""
    ppse = _call(link, "select PPSE", apdu(0x00, 0xA4, 0x04, 0x00, PPSE_NAME))
    try:
        entries = find_all(ppse, "61")
        candidates = []
        for entry in entries:
            tags = find(entry)
            if "4F" in tags:
                prio = tags.get("87", b"\x0f")[0] & 0x0F
                candidates.append((prio, tags["4F"].hex().upper()))
    except CardError as exc:
        raise CardError(f"select PPSE: malformed answer ({exc})") from None
    supported = [(p, a) for p, a in sorted(candidates) if a in aids]
    if not supported:
        listed = ", ".join(a for _, a in candidates) or "none"
        raise CardError(f"no supported application on the card (card lists: {listed})")
    aid = supported[0][1]
    fci, sw = _call_sw(link, "select AID", apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(aid)),
                       (SW_OK, SW_APP_BLOCKED))
    return aid, aids[aid], fci, sw == SW_APP_BLOCKED


def run_payment(link: Link, aids: Mapping[str, str], checkout: Checkout,
                card_auth_key: Callable[[str], bytes],
                un: bytes | None = None) -> EmvTap:
    """The first half of an EMV transaction, ending with the card's ARQC.

    ``card_auth_key(provider)`` returns the provider's card-authentication public key (from
    the terminal key store); the card's certificate and its signature over ``un`` must verify.

    A blocked application ('6283' to SELECT) cannot pay: the dialogue goes on as a zero-amount
    account check (its AAC goes online, so the issuer can answer with a script, such as
    APPLICATION UNBLOCK), and the tap says ``blocked``.
    """
    link.begin()
    aid, provider, fci, blocked = select_payment(link, aids)
    if blocked:
        checkout = replace(checkout, amount=0)
    pdol = dol(_tags("select AID", fci, "9F38")["9F38"])
    un = un or secrets.token_bytes(4)
    values = {
        "9F66": bytes.fromhex("36004000"),
        "9F02": _bcd(checkout.amount, 6),
        "9F03": bytes(6),
        "5F2A": _bcd(checkout.currency_numeric, 2),
        "9F1A": _bcd(checkout.country_numeric, 2),
        "95": bytes(5),
        "9A": bytes.fromhex(checkout.when.strftime("%y%m%d")),
        "9C": bytes([checkout.transaction_type]),
        "9F37": un,
    }
    pdol_data = _dol_data("get processing options", pdol, values)
    gpo = _call(link, "get processing options",
                apdu(0x80, 0xA8, 0x00, 0x00, bytes([0x83, len(pdol_data)]) + pdol_data))
    gpo_tags = _tags("get processing options", gpo, "82", "94")
    aip, afl = gpo_tags["82"], gpo_tags["94"]
    records: dict[str, bytes] = {}
    if len(afl) % 4:
        raise CardError("get processing options: malformed AFL")
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for rec in range(first, last + 1):
            data = _call(link, f"read record {sfi}/{rec}",
                         apdu(0x00, 0xB2, rec, (sfi << 3) | 0x04))
            for tag, value in _tags(f"read record {sfi}/{rec}", data).items():
                records.setdefault(tag, value)
    for tag in ("5A", "5F24", "8C", "8D", "9F46", "DF01", "DF02", "DF03"):
        if tag not in records:
            raise CardError(f"read record: card data lacks {tag}")
    pan = records["5A"].hex().upper().rstrip("F")
    expiry = records["5F24"].hex()
    psn = records.get("5F34", b"\x00").hex()
    try:
        cert = cardcrypto.certificate_from_card(
            provider, records["DF03"].decode("ascii"), records["DF01"],
            records["DF02"].decode("ascii"), pan, expiry[:4], records["9F46"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"read record: malformed card certificate ({exc})") from None
    auth = _tags("internal authenticate", _call(link, "internal authenticate",
                                                apdu(0x00, 0x88, 0x00, 0x00, un)),
                 "9F4B", "9F36")
    auth_atc = int.from_bytes(auth["9F36"], "big")
    cardcrypto.verify_card(cert, card_auth_key(provider), un, auth_atc, auth["9F4B"], pan,
                           checkout.when.date())
    cdol1_data = _dol_data("generate AC", dol(records["8C"]), values)
    ac = _tags("generate AC", _call(link, "generate AC",
                                    apdu(0x80, 0xAE, CID_ARQC, 0x00, cdol1_data)),
               "9F27", "9F36", "9F26", "9F10")
    atc = int.from_bytes(ac["9F36"], "big")
    if atc != auth_atc:
        raise CardError(f"generate AC: ATC {atc} is not the authenticated ATC {auth_atc}")
    return EmvTap(aid=aid, provider=provider, pan=pan, psn=psn, expiry=expiry, aip=aip,
                  atc=atc, cid=ac["9F27"][0], arqc=ac["9F26"], iad=ac["9F10"],
                  cdol1_data=cdol1_data, unpredictable_number=un,
                  card_signature=auth["9F4B"], certificate=cert,
                  cdol2=dol(records["8D"]), blocked=blocked)


@dataclass(frozen=True)
class Completion:
    """The card's answer to the issuer's response: TC (accepted) or AAC (declined)."""

    cid: int
    cryptogram: bytes
    issuer_authenticated: bool


def complete_payment(link: Link, tap: EmvTap, arc: bytes, arpc: bytes) -> Completion:
    """Second GENERATE AC with the issuer's ARC and ARPC."""
    link.begin()
    values = {"8A": arc, "91": arpc + arc, "95": bytes(5), "9F37": tap.unpredictable_number}
    data = _dol_data("second generate AC", tap.cdol2, values)
    p1 = 0x40 if arc == b"00" else 0x00
    tags = _tags("second generate AC", _call(link, "second generate AC",
                                             apdu(0x80, 0xAE, p1, 0x00, data)),
                 "9F27", "9F26", "9F10")
    cvr = cvr_from_iad(tags["9F10"])
    return Completion(cid=tags["9F27"][0], cryptogram=tags["9F26"],
                      issuer_authenticated=not cvr[1] & 0x04)


def apply_script(link: Link, command: bytes) -> int:
    """Give the card an issuer script command (after the transaction's GENERATE AC); returns
    the card's status word ('9000' applied, '6988' its MAC refused)."""
    link.begin()
    try:
        return link.transmit(command)[1]
    except CardError as exc:
        raise CardError(f"issuer script: {exc}") from None


# -- transit ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PurseTap:
    aid: str
    card_number: str  # shown masked at the terminal, never published
    card_token: str  # what the bus carries for this card
    balance: int


@dataclass(frozen=True)
class LoadInit:
    balance: int
    online_seq: int
    random: bytes
    mac1: bytes
    amount: int
    terminal_id: str


def read_purse(link: Link, aid: str) -> PurseTap:
    link.begin()
    fci = _call(link, "select purse", apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(aid)))
    tags = find(fci)
    number = tags.get("9F0C", b"").decode(errors="replace")
    token = tags.get(CARD_TOKEN_TAG, b"").decode(errors="replace")
    if not token.startswith("tok_"):
        raise CardError("select purse: the card carries no card token")
    bal = _call(link, "get balance", apdu(0x80, 0x5C, 0x00, 0x02, le=4))
    if len(bal) != 4:
        raise CardError("get balance: answer is not 4 bytes")
    return PurseTap(aid=aid, card_number=number, card_token=token,
                    balance=int.from_bytes(bal, "big"))


def init_load(link: Link, amount: int, terminal_id: str) -> LoadInit:
    """INITIALIZE FOR LOAD: the card's MAC1 over balance, amount, terminal."""
    link.begin()
    data = _call(link, "initialize for load",
                 apdu(0x80, 0x50, 0x00, 0x02,
                      b"\x01" + amount.to_bytes(4, "big") + terminal_id.encode("ascii"),
                      le=0x10))
    if len(data) != 16:
        raise CardError("initialize for load: answer is not 16 bytes")
    return LoadInit(balance=int.from_bytes(data[0:4], "big"),
                    online_seq=int.from_bytes(data[4:6], "big"), random=data[8:12],
                    mac1=data[12:16], amount=amount, terminal_id=terminal_id)


def credit_load(link: Link, when: datetime, mac2: bytes) -> bytes:
    """CREDIT FOR LOAD (the operator's time of the load, its MAC2) -> the TAC."""
    link.begin()
    date_time = card_time(when)
    data = _call(link, "credit for load",
                 apdu(0x80, 0x52, 0x00, 0x00, bytes.fromhex(date_time) + mac2, le=4))
    if len(data) != 4:
        raise CardError("credit for load: answer is not 4 bytes")
    return data
