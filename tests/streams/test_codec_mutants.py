"""Codec edges the mutation run (``make mutation``) found untested: the size limit is
inclusive on both sides of the wire (an event of exactly ``max_bytes`` goes out and comes
back in; one byte less of limit refuses it)."""

from __future__ import annotations

import pytest

from cardbus.errors import DecodeError, EncodeError
from schemas.samples import sample_event
from streams.codec import decode, encode


def test_an_event_of_exactly_the_limit_encodes_and_decodes() -> None:
    event = sample_event("PaymentRequested")
    size = len(encode(event))
    data = encode(event, max_bytes=size)
    assert len(data) == size
    assert decode(None, data, max_bytes=size) == event
    with pytest.raises(EncodeError, match="byte limit"):
        encode(event, max_bytes=size - 1)
    with pytest.raises(DecodeError, match="byte limit"):
        decode(None, data, max_bytes=size - 1)
