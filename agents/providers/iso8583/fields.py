"""The ISO 8583:1987 field spec the bridge and the bank's host agree on, declared once.

ASCII numerics and lengths, a binary bitmap (primary, and secondary when a field above 64 is
present), a binary PIN block (DE 52) and binary ICC data with an ASCII LLL length (DE 55): the
layout of pyiso8583's default 1987 spec, restricted to the fields used (a message carrying any
other field does not decode). The host declares the same layout with jPOS's field packagers
(``deploy/iso-host/.../CardBus87Packager.java``); the two share no code.

On the wire each message is preceded by its length, 2 bytes big-endian.

| DE | name | format | CardBus |
|---|---|---|---|
| MTI | message type | n4 | 0100/0110 authorization, 0400/0401/0410 reversal, 0800/0810 network |
| 2 | PAN | LLVAR n..19 | ``card.pan_encrypted``, opened in the bridge's HSM only |
| 3 | processing code | n6 | 000000 purchase (310000 balance inquiry) |
| 4 | amount, transaction | n12 | ``amount.amount`` (minor units) |
| 7 | transmission date and time | n10 MMDDhhmmss | the bridge's clock at send (UTC) |
| 11 | STAN | n6 | the link's counter: matching key with DE 41 |
| 12 / 13 | local time / date | n6 / n4 | ``occurred_at`` of the request |
| 22 | POS entry mode | n3 | 071: contactless chip, PIN capable |
| 38 | authorization code | an6 | ``auth_code`` |
| 39 | response code | an2 | ``response_code`` (mapped, ``messages.CODES``) |
| 41 | terminal id | ans8 | ``terminal_id`` (as is if 8 or fewer, else T + 7 hex of its hash) |
| 42 | merchant id | ans15 | ``merchant.merchant_id`` |
| 49 | currency | n3 | ``amount.currency`` as ISO 4217 numeric |
| 52 | PIN block | b8 | ``pin_block``: format 4 under the provider key -> format 0 under the ZPK |
| 54 | additional amounts | LLLVAR ans..120 | balance inquiry answer |
| 55 | ICC data | LLLVAR b..255 | ``card``: CDOL1 tags, ATC, ARQC, PSN; back: 91 = ARPC+ARC |
| 70 | network management code | n3 | 001 sign-on, 002 sign-off, 301 echo |
| 90 | original data elements | n42 | a reversal's original MTI, STAN, DE 7 |
"""

from __future__ import annotations

import struct
from typing import Any

import iso8583
from iso8583.decoder import DecodeError as Iso8583DecodeError
from iso8583.encoder import EncodeError as Iso8583EncodeError

from cardbus.errors import DecodeError, EncodeError


def _f(desc: str, max_len: int, *, enc: str = "ascii", len_type: int = 0) -> dict[str, Any]:
    return {"data_enc": enc, "len_enc": "ascii", "len_type": len_type, "max_len": max_len,
            "desc": desc}


SPEC: dict[str, dict[str, Any]] = {
    "h": _f("Message Header", 0),
    "t": _f("Message Type Indicator", 4),
    "p": _f("Bitmap, Primary", 8, enc="b"),
    "1": _f("Bitmap, Secondary", 8, enc="b"),
    "2": _f("Primary Account Number (PAN)", 19, len_type=2),
    "3": _f("Processing Code", 6),
    "4": _f("Amount, Transaction", 12),
    "7": _f("Transmission Date and Time", 10),
    "11": _f("System Trace Audit Number", 6),
    "12": _f("Time, Local Transaction", 6),
    "13": _f("Date, Local Transaction", 4),
    "22": _f("Point-of-Service Entry Mode", 3),
    "38": _f("Authorization ID Response", 6),
    "39": _f("Response Code", 2),
    "41": _f("Card Acceptor Terminal Identification", 8),
    "42": _f("Card Acceptor Identification Code", 15),
    "49": _f("Currency Code, Transaction", 3),
    "52": _f("PIN Data", 8, enc="b"),
    "54": _f("Additional Amounts", 120, len_type=3),
    "55": _f("ICC data", 255, enc="b", len_type=3),
    "70": _f("Network Management Information Code", 3),
    "90": _f("Original Data Elements", 42),
}
"""pyiso8583 spec: the only fields the bridge sends or accepts."""

MAX_FRAME = 4096
SENSITIVE = ("2", "52")  # never logged, never in a dead letter as is

Doc = dict[str, Any]


def encode(doc: Doc) -> bytes:
    """A message (``{"t": "0100", "2": ..., ...}``; DE 52/55 as hex) -> its bytes."""
    try:
        raw, _ = iso8583.encode(dict(doc), SPEC)
    except (Iso8583EncodeError, KeyError, TypeError, ValueError) as exc:
        field = getattr(exc, "field", None)
        raise EncodeError(f"ISO 8583 message does not encode: field {field}") from None
    return bytes(raw)


def decode(raw: bytes) -> Doc:
    """Bytes -> a message; ``DecodeError`` (with the field) for anything that does not fit
    the spec: a short message, a bitmap announcing fields that are not there or not ours."""
    try:
        doc, _ = iso8583.decode(raw, SPEC)
    except Iso8583DecodeError as exc:
        raise DecodeError(f"ISO 8583: {exc.msg} (field {exc.field})", field=str(exc.field)
                          ) from None
    except (KeyError, IndexError, ValueError) as exc:
        raise DecodeError(f"ISO 8583: not a message of this spec ({type(exc).__name__}: "
                          f"{exc})", field="bitmap") from None
    return {k: v for k, v in doc.items() if k not in ("p", "1", "h")}


def frame(payload: bytes) -> bytes:
    """The payload with its 2-byte big-endian length."""
    if len(payload) > MAX_FRAME:
        raise EncodeError(f"ISO 8583 message of {len(payload)} bytes is too long")
    return struct.pack(">H", len(payload)) + payload
