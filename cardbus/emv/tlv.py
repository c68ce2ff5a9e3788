"""Minimal BER-TLV (EMV) encoding and decoding, enough for the card dialogue."""

from __future__ import annotations

from cardbus.ber import encode_length, parse_raw, read_tag
from cardbus.errors import CardError


def tlv(tag: str, value: bytes) -> bytes:
    """One TLV: ``tag`` in hex (``"9F26"``), ``value`` raw."""
    return bytes.fromhex(tag) + encode_length(len(value)) + value


def parse(data: bytes) -> list[tuple[str, bytes]]:
    """Decode a flat run of TLVs into (TAG, value) pairs; raises CardError when malformed."""
    return [(tag.hex().upper(), value) for tag, value in parse_raw(data, skip_padding=True)]


CONSTRUCTED = {"6F", "A5", "BF0C", "61", "70", "77", "E1"}
MAX_DEPTH = 8
"""Nesting a terminal follows (EMV answers nest 4 deep at most): a card nesting templates
without end is refused, never followed into a RecursionError."""


def _walk(data: bytes) -> list[tuple[str, bytes]]:
    """Every (TAG, value) in nested TLVs, depth first, in order."""
    out: list[tuple[str, bytes]] = []

    def walk(chunk: bytes, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CardError(f"TLV nested more than {MAX_DEPTH} deep")
        for tag, value in parse(chunk):
            out.append((tag, value))
            if tag in CONSTRUCTED:
                walk(value, depth + 1)

    walk(data, 0)
    return out


def find(data: bytes) -> dict[str, bytes]:
    """Decode nested TLVs into a flat {TAG: value} map (first occurrence wins)."""
    found: dict[str, bytes] = {}
    for tag, value in _walk(data):
        found.setdefault(tag, value)
    return found


def find_all(data: bytes, tag: str) -> list[bytes]:
    """Every value with ``tag`` anywhere in nested TLVs (PPSE lists several 61 entries)."""
    return [value for t, value in _walk(data) if t == tag]


def dol(data: bytes) -> list[tuple[str, int]]:
    """Decode a Data Object List (tags and lengths, no values), e.g. a PDOL or CDOL."""
    out: list[tuple[str, int]] = []
    i = 0
    try:
        while i < len(data):
            start, i = i, read_tag(data, i)
            out.append((data[start:i].hex().upper(), data[i]))
            i += 1
    except IndexError:
        raise CardError("truncated DOL") from None
    return out


def dol_encode(items: list[tuple[str, int]]) -> bytes:
    """Encode (tag, length) pairs as a DOL."""
    return b"".join(bytes.fromhex(t) + bytes([n]) for t, n in items)


def fill_dol(items: list[tuple[str, int]], values: dict[str, bytes]) -> bytes:
    """Concatenate values for a DOL: missing tags are zeros, too long cut, too short padded."""
    out = bytearray()
    for tag, n in items:
        v = values.get(tag, b"")
        out += v[:n] if len(v) >= n else bytes(n - len(v)) + v
    return bytes(out)
