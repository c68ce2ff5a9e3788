"""The EMV data layout every party shares: what the card sends, what the terminal reads and
fills in, what the issuer checks (the contactless payment application of the CardBus cards).

``arqc_data`` is the one definition of what the ARQC covers, used by the card, the terminal and
the provider: CDOL1 data || AIP || ATC (EMV Book 2 8.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cardbus.errors import ConfigError

PPSE_NAME = b"2PAY.SYS.DDF01"
CARD_TOKEN_TAG = "DF01"  # noqa: S105 - a TLV tag, not a secret
"""Proprietary FCI tag of a transit purse: the operator's token of the card, what stands for
the card on the bus (the card number, tag 9F0C, stays between the card and the terminal)."""
AIP = bytes.fromhex("5800")  # DDA-like card auth + cardholder verification (the AIP
# cardbus.crypto.emv.arqc_data assumes by default: CardRead carries no AIP)
AFL = bytes.fromhex("08010200")  # SFI 1, records 1..2
PDOL = [("9F66", 4), ("9F02", 6), ("5F2A", 2), ("9F37", 4)]
CDOL1 = [("9F02", 6), ("9F03", 6), ("9F1A", 2), ("95", 5), ("5F2A", 2), ("9A", 3), ("9C", 1),
         ("9F37", 4)]
CDOL2 = [("8A", 2), ("91", 10), ("95", 5), ("9F37", 4)]
CDOL1_LEN = sum(n for _, n in CDOL1)
CDOL2_LEN = sum(n for _, n in CDOL2)
CVR_ONLINE = bytes.fromhex("03A00000")
CVR_ISSUER_AUTH_FAILED = bytes.fromhex("03A40000")
CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80
ARC_APPROVED = b"00"


def arqc_data(cdol1: bytes, aip: bytes, atc: int) -> bytes:
    """The bytes the ARQC (and TC/AAC) MAC covers: CDOL data || AIP || ATC, the order of
    ``cardbus.crypto.emv.arqc_data`` (EMV Book 2 8.1.1)."""
    return cdol1 + aip + atc.to_bytes(2, "big")


def iad(cvr: bytes) -> bytes:
    """Issuer Application Data: length, key index, CVN, CVR."""
    return bytes([0x06, 0x01, 0x0A]) + cvr


def cvr_from_iad(data: bytes) -> bytes:
    return data[3:7]


# -- ISO 4217: the currencies a CardBus terminal may put in 5F2A, and the issuer checks ------

CURRENCY_NUMERIC: dict[str, int] = {"CNY": 156, "USD": 840, "EUR": 978, "HKD": 344,
                                    "GBP": 826}
"""ISO 4217 alphabetic -> numeric code, for the currencies CardBus accepts (all with two
minor units). Anything else is refused, never sent as some default code."""


def currency_numeric(currency: str) -> int:
    """The ISO 4217 numeric code of ``currency``; ``ConfigError`` for a currency CardBus does
    not accept (an unknown currency must not go into a cryptogram as some other one)."""
    code = CURRENCY_NUMERIC.get(currency)
    if code is None:
        known = ", ".join(sorted(CURRENCY_NUMERIC))
        raise ConfigError(f"currency {currency!r} is not accepted (known: {known})")
    return code


# -- what the ARQC covers, field by field (the issuer rebuilds it from the request) ----------

ARQC_DATA_LEN = CDOL1_LEN + 2 + 2  # CDOL1 data || AIP || ATC
TX_PURCHASE = 0x00  # 9C transaction type: goods and services


@dataclass(frozen=True)
class ArqcInput:
    """The data an ARQC covers, parsed (CDOL1 of the CardBus cards, then AIP and ATC)."""

    amount: int  # 9F02, minor units
    amount_other: int  # 9F03
    country: int  # 9F1A, ISO 3166 numeric
    tvr: bytes  # 95
    currency: int  # 5F2A, ISO 4217 numeric
    date: str  # 9A, YYMMDD
    tx_type: int  # 9C
    unpredictable_number: bytes  # 9F37
    aip: bytes
    atc: int


def _bcd_int(data: bytes, what: str) -> int:
    text = data.hex()
    if not text.isdigit():
        raise ValueError(f"{what} is not BCD")
    return int(text)


def parse_arqc_data(data: bytes) -> ArqcInput:
    """The fields of ``arqc_data``; ``ValueError`` if ``data`` is not that layout (length, BCD
    digits, a real calendar date)."""
    if len(data) != ARQC_DATA_LEN:
        raise ValueError(f"cryptogram data is {len(data)} bytes, not {ARQC_DATA_LEN}")
    fields: dict[str, bytes] = {}
    at = 0
    for tag, size in CDOL1:
        fields[tag] = data[at:at + size]
        at += size
    date = fields["9A"].hex()
    _bcd_int(fields["9A"], "9A date")
    datetime.strptime(date, "%y%m%d")  # a real calendar date (ValueError if not)
    return ArqcInput(
        amount=_bcd_int(fields["9F02"], "9F02 amount"),
        amount_other=_bcd_int(fields["9F03"], "9F03 amount other"),
        country=_bcd_int(fields["9F1A"], "9F1A country"), tvr=fields["95"],
        currency=_bcd_int(fields["5F2A"], "5F2A currency"), date=date,
        tx_type=fields["9C"][0], unpredictable_number=fields["9F37"],
        aip=data[at:at + 2], atc=int.from_bytes(data[at + 2:at + 4], "big"))
