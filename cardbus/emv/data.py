"""The EMV data layout every party shares: what the card sends, what the terminal reads and
fills in, what the issuer checks (the contactless payment application of the CardBus cards).

``arqc_data`` is the one definition of what the ARQC covers, used by the card, the terminal and
the provider: CDOL1 data || AIP || ATC (EMV Book 2 8.1.1).
"""

from __future__ import annotations

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
