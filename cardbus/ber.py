"""BER-TLV framing (ISO/IEC 8825-1 tags and lengths), shared by the EMV dialogue
(``cardbus.emv.tlv``, hex-string tags) and GlobalPlatform (``cardbus.gp.ber``, integer tags).

Lengths up to two bytes (65,535), as both uses need; anything else is a ``CardError``."""

from __future__ import annotations

from cardbus.errors import CardError


def encode_length(n: int) -> bytes:
    """The BER length of an ``n``-byte value."""
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise CardError("TLV value too long")


def read_tag(data: bytes, i: int) -> int:
    """Where the tag starting at ``data[i]`` ends (multi-byte tags: low five bits all set, then
    bytes while bit 8 is set). ``IndexError`` when the data ends inside it."""
    start = i
    i += 1
    if data[start] & 0x1F == 0x1F:
        while data[i] & 0x80:
            i += 1
        i += 1
    return i


def parse_raw(data: bytes, *, skip_padding: bool = False) -> list[tuple[bytes, bytes]]:
    """A flat run of TLVs -> [(tag bytes, value)] in order; ``skip_padding`` passes over the
    00 and FF bytes EMV allows between TLVs. ``CardError`` when malformed."""
    out: list[tuple[bytes, bytes]] = []
    i = 0
    try:
        while i < len(data):
            if skip_padding and data[i] in (0x00, 0xFF):
                i += 1
                continue
            start, i = i, read_tag(data, i)
            tag = data[start:i]
            length = data[i]
            i += 1
            if length & 0x80:
                n = length & 0x7F
                if not 1 <= n <= 2:
                    raise CardError("bad TLV length")
                length = int.from_bytes(data[i:i + n], "big")
                i += n
            if i + length > len(data):
                raise CardError("TLV runs past the end of the data")
            out.append((tag, data[i:i + length]))
            i += length
    except IndexError:
        raise CardError("truncated TLV") from None
    return out
