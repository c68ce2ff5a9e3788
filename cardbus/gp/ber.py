"""A small BER-TLV reader and writer (ISO/IEC 8825-1 tags and lengths, as GlobalPlatform uses
them): repeated tags stay in order, which a dict-based decoder would lose."""

from __future__ import annotations

from cardbus.errors import CardError


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise CardError("TLV value too long")


def tlv(tag: int, value: bytes) -> bytes:
    """One TLV; ``tag`` as an integer (``0x9F70``)."""
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big") + encode_length(len(value)) \
        + value


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """A flat run of TLVs -> [(tag, value)]; ``CardError`` when malformed."""
    out: list[tuple[int, bytes]] = []
    i = 0
    try:
        while i < len(data):
            start = i
            i += 1
            if data[start] & 0x1F == 0x1F:
                while data[i] & 0x80:
                    i += 1
                i += 1
            tag = int.from_bytes(data[start:i], "big")
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


def first(data: bytes, tag: int) -> bytes | None:
    """The value of the first ``tag`` at the top level of ``data``."""
    return next((v for t, v in parse(data) if t == tag), None)
