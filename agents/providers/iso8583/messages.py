"""Pure builders and readers of the bridge's ISO 8583 messages (no I/O, no clock).

``authorization`` builds the 0100 from what the platform sent (with the PAN and the translated
PIN block the HSM facade gives), ``reversal`` the 0400/0401 of an original, ``network`` an 0800;
``read_answer`` turns a 0110 into a CardBus outcome; ``matching_key`` is how answers find their
requests; ``decision`` builds the unsealed ``AuthorizationDecided``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pyemv import tlv

from agents.providers.decide import derived_id
from agents.providers.iso8583.fields import Doc
from cardbus.errors import DecodeError
from cardbus.response_codes import (
    APPROVED,
    BAD_CRYPTOGRAM,
    DO_NOT_HONOUR,
    EXPIRED_CARD,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    INVALID_CARD,
    LOST_CARD,
    PIN_TRIES_EXCEEDED,
    REPLAYED_ATC,
    STOLEN_CARD,
    SYSTEM_ERROR,
    WRONG_CURRENCY,
)
from schemas.cards import CardRead
from schemas.payments import AuthorizationDecided, AuthorizationRequested

AUTH, AUTH_ANSWER = "0100", "0110"
REVERSAL, REVERSAL_REPEAT, REVERSAL_ANSWER = "0400", "0401", "0410"
NETWORK, NETWORK_ANSWER = "0800", "0810"
NetworkCode = Literal["001", "002", "301"]
SIGN_ON: NetworkCode = "001"
SIGN_OFF: NetworkCode = "002"
ECHO: NetworkCode = "301"
PURCHASE, BALANCE_INQUIRY = "000000", "310000"
POS_ENTRY_CONTACTLESS_CHIP = "071"

CDOL1_LAYOUT: tuple[tuple[str, int], ...] = (
    ("9F02", 6), ("9F03", 6), ("9F1A", 2), ("95", 5), ("5F2A", 2), ("9A", 3), ("9C", 1),
    ("9F37", 4), ("82", 2), ("9F36", 2))
"""What a CardBus card's ARQC covers (``CardRead.cdol_data``): its CDOL1 data, then AIP and
ATC. DE 55 carries each as its own tag, as an acquirer sends them; the host rebuilds the data."""

CODES: dict[str, str] = {
    "00": APPROVED, "05": DO_NOT_HONOUR, "12": WRONG_CURRENCY, "14": INVALID_CARD,
    "41": LOST_CARD, "43": STOLEN_CARD, "51": INSUFFICIENT_FUNDS, "54": EXPIRED_CARD,
    "55": INCORRECT_PIN, "75": PIN_TRIES_EXCEEDED, "82": BAD_CRYPTOGRAM, "94": REPLAYED_ATC,
    "30": SYSTEM_ERROR, "96": SYSTEM_ERROR,
}
"""The host's DE 39 -> CardBus's response code; any other code is a do-not-honour (05)."""

CURRENCY_NUMERIC = {"CNY": "156", "EUR": "978", "USD": "840", "JPY": "392", "GBP": "826"}


def map_code(host_code: str) -> str:
    """CardBus's response code for the host's DE 39."""
    return CODES.get(host_code, DO_NOT_HONOUR)


def terminal_field(terminal_id: str) -> str:
    """DE 41 for a CardBus terminal id (8 characters, stable)."""
    if len(terminal_id) <= 8:
        return terminal_id.ljust(8)
    return "T" + hashlib.sha256(terminal_id.encode()).hexdigest()[:7].upper()


def matching_key(doc: Doc) -> tuple[str, str]:
    """How an answer finds its request: (STAN, terminal id)."""
    return str(doc.get("11", "")), str(doc.get("41", "")).ljust(8)


def transmission_time(at: datetime) -> str:
    """DE 7: MMDDhhmmss (UTC)."""
    return at.strftime("%m%d%H%M%S")


def icc_data(card: CardRead) -> bytes:
    """DE 55: the card's cryptogram data as BER-TLV (CDOL1 tags, AIP, ATC, ARQC, PSN)."""
    data = bytes.fromhex(card.cdol_data)
    if len(data) != sum(n for _, n in CDOL1_LAYOUT):
        raise DecodeError(f"cdol_data: {len(data)} bytes, not the CardBus CDOL1 layout",
                          field="card.cdol_data")
    tags: dict[str, bytes] = {}
    at = 0
    for tag, n in CDOL1_LAYOUT:
        tags[tag] = data[at:at + n]
        at += n
    tags["9F26"] = bytes.fromhex(card.arqc)
    tags["5F34"] = bytes.fromhex(card.psn)
    return tlv.encode(tags)


def authorization(req: AuthorizationRequested, *, pan: str, pin_block: bytes | None,
                  stan: str, sent_at: datetime) -> Doc:
    """The 0100 for ``req`` (PAN and DE 52 from the bridge's HSM facade)."""
    local = req.occurred_at
    doc: Doc = {
        "t": AUTH, "2": pan, "3": PURCHASE, "4": f"{req.amount.amount:012d}",
        "7": transmission_time(sent_at), "11": stan, "12": local.strftime("%H%M%S"),
        "13": local.strftime("%m%d"), "22": POS_ENTRY_CONTACTLESS_CHIP,
        "41": terminal_field(req.terminal_id),
        "42": req.merchant.merchant_id[:15].ljust(15),
        "49": CURRENCY_NUMERIC.get(req.amount.currency, "000"),
        "55": icc_data(req.card).hex().upper(),
    }
    if pin_block is not None:
        doc["52"] = pin_block.hex().upper()
    return doc


def balance_inquiry(*, pan: str, terminal_id: str, stan: str, sent_at: datetime) -> Doc:
    """An 0100 asking for the available balance (DE 54 in the answer)."""
    return {"t": AUTH, "2": pan, "3": BALANCE_INQUIRY, "4": "000000000000",
            "7": transmission_time(sent_at), "11": stan, "41": terminal_field(terminal_id)}


def reversal(original: Doc, *, stan: str, repeat: bool) -> Doc:
    """The 0400 (or its repeat, 0401) of the 0100 ``original``: same PAN, amount and terminal;
    DE 90 = original MTI, STAN and DE 7 (acquirer and forwarder ids zero)."""
    doc: Doc = {k: original[k] for k in ("2", "3", "4", "7", "41", "42", "49") if k in original}
    doc.update({"t": REVERSAL_REPEAT if repeat else REVERSAL, "11": stan,
                "90": f"{original['t']}{original['11']}{original['7']}" + "0" * 22})
    return doc


def network(code: NetworkCode, *, stan: str, sent_at: datetime) -> Doc:
    """An 0800: sign-on, sign-off or echo."""
    return {"t": NETWORK, "7": transmission_time(sent_at), "11": stan, "70": code}


@dataclass(frozen=True)
class HostAnswer:
    """What a 0110 says, in CardBus terms."""

    host_code: str
    response_code: str
    auth_code: str | None
    arpc: str | None  # 8 bytes hex (method 1), when the host verified the ARQC

    @property
    def approved(self) -> bool:
        return self.response_code == APPROVED


def read_answer(doc: Doc) -> HostAnswer:
    """A 0110 -> its outcome; ``DecodeError`` if it is not a well-formed answer."""
    if doc.get("t") != AUTH_ANSWER or "39" not in doc:
        raise DecodeError(f"not an authorization answer: MTI {doc.get('t')}", field="t")
    host_code = str(doc["39"])
    code = map_code(host_code)
    auth = str(doc.get("38", "")).strip().upper() or None
    if code == APPROVED and (auth is None or len(auth) != 6 or not auth.isalnum()):
        raise DecodeError("an approval without a 6-character auth code", field="38")
    arpc = None
    if "55" in doc:
        try:
            issuer_auth = tlv.decode(bytes.fromhex(str(doc["55"]))).get("91")
        except Exception as exc:  # noqa: BLE001 - pyemv raises its own TLV errors
            raise DecodeError(f"DE 55 is not BER-TLV: {exc}", field="55") from None
        if isinstance(issuer_auth, bytes | bytearray) and len(issuer_auth) >= 8:
            arpc = bytes(issuer_auth[:8]).hex().upper()
    return HostAnswer(host_code, code, auth if code == APPROVED else None, arpc)


def decision(req: AuthorizationRequested, answer: HostAnswer, *, provider_id: str,
             chain_id: str, sequence: int, prev_hash: str) -> AuthorizationDecided:
    """The (unsealed) decision for ``req`` from the host's ``answer``; ids and time come from
    the request, as a native provider's do."""
    return AuthorizationDecided(
        event_id=derived_id("decision", req.event_id), correlation_id=req.correlation_id,
        occurred_at=req.occurred_at, producer=f"provider:{provider_id}",
        provider_id=provider_id, request_event_id=req.event_id,
        pan_token=req.card.pan_token, amount=req.amount, approved=answer.approved,
        response_code=answer.response_code, auth_code=answer.auth_code, arpc=answer.arpc,
        chain_id=chain_id, sequence=sequence, prev_hash=prev_hash)
