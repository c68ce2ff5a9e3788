"""A small BER-TLV reader and writer (ISO/IEC 8825-1 tags and lengths, as GlobalPlatform uses
them): repeated tags stay in order, which a dict-based decoder would lose."""

from __future__ import annotations

from cardbus.ber import encode_length, parse_raw

__all__ = ["encode_length", "first", "parse", "tlv"]


def tlv(tag: int, value: bytes) -> bytes:
    """One TLV; ``tag`` as an integer (``0x9F70``)."""
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big") + encode_length(len(value)) \
        + value


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """A flat run of TLVs -> [(tag, value)]; ``CardError`` when malformed."""
    return [(int.from_bytes(tag, "big"), value) for tag, value in parse_raw(data)]


def first(data: bytes, tag: int) -> bytes | None:
    """The value of the first ``tag`` at the top level of ``data``."""
    return next((v for t, v in parse(data) if t == tag), None)
