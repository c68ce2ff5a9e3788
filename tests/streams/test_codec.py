"""The codec: one encode/decode for aiokafka and Faust; every bad payload -> DecodeError
naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs as faust_codecs
from faust.serializers.registry import Registry

from cardbus.errors import DecodeError, EncodeError
from schemas.deadletters import MAX_ORIGINAL_BYTES, original_fields
from schemas.registry import model_for
from schemas.samples import sample_event, sample_raw
from streams.codec import MAX_PAYLOAD_BYTES, EventCodec, decode, encode, faust_codec
from streams.topics import NAMESPACE, topic_spec


def _b(raw: Any) -> bytes:
    return json.dumps(raw).encode()


def test_wire_form_is_compact_json_and_decodes_back_on_its_topic() -> None:
    event = sample_event("PaymentRequested")
    data = encode(event, topic=f"{NAMESPACE}.payment-requests")
    assert b": " not in data and b", " not in data and b"\n" not in data
    assert decode(f"{NAMESPACE}.payment-requests", data) == event
    assert decode(topic_spec(f"{NAMESPACE}.payment-requests").adapter, data) == event


def _bad(**changes: Any) -> bytes:
    raw = sample_raw("PaymentRequested")
    for key, value in changes.items():
        if value is ...:
            raw.pop(key)
        else:
            raw[key] = value
    return _b(raw)


def _nested(path: str, value: Any) -> bytes:
    raw = sample_raw("PaymentRequested")
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[leaf] = value
    return _b(raw)


@pytest.mark.parametrize(("data", "field", "words"), [
    (b"{not json", None, "malformed JSON"),
    (b"\xff\xfe{}", None, "not UTF-8"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"schema_version": 1}', "type", "type"),
    (_bad(type="PaymentApprovedMaybe"), "type", "unknown event type"),
    (_b(sample_raw("CardTapped")), "type", "does not belong on this topic"),
    (_bad(schema_version=7), "schema_version", "newer"),
    (_bad(schema_version="2"), "schema_version", "integer"),
    (_bad(merchant=...), "merchant", "Field required"),
    (_bad(surprise=1), "surprise", "Extra inputs"),
    (_nested("amount.amount", 12.5), "amount.amount", "integer"),
    (_nested("amount.amount", 1e3), "amount.amount", "integer"),
    (_nested("amount.currency", "yuan"), "amount.currency", "pattern"),
    (_bad(occurred_at="2025-01-15T10:30:00"), "occurred_at", "timezone"),
    (_nested("card.masked_pan", "6222021234567894"), "card.masked_pan", "pattern"),
    (_nested("card.atc", 70000), "card.atc", "less than or equal"),
    (b'{"type": "PaymentRequested", "type": "CardTapped", "schema_version": 2}', "type",
     "duplicate key"),
    (b'{"type":"PaymentRequested","type":"CardTapped","schema_version":2}', "type",
     "duplicate key"),  # compact, as encode writes: the fast path must not hide it
    (b'{"type": "PaymentRequested", "schema_version": 2, "x": NaN}', None, "NaN"),
    (b"null", None, "JSON object"),
])
def test_bad_input_is_one_error_that_names_the_field(data: bytes, field: str | None,
                                                     words: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(f"{NAMESPACE}.payment-requests", data)
    assert info.value.field == field
    assert words in info.value.reason
    if field:
        assert info.value.reason.split(": ")[0] in (field, "PaymentRequested")
        assert field in info.value.reason


def test_a_duplicate_key_inside_an_encoded_event_is_refused() -> None:
    """A payload exactly as ``encode`` writes it, but with one nested key given twice: the
    last value would win silently in a plain parser."""
    data = encode(sample_event("PaymentRequested"))
    assert b'"amount":{"amount":' in data
    forged = data.replace(b'"amount":{"amount":', b'"amount":{"amount":1,"amount":', 1)
    with pytest.raises(DecodeError, match="amount: duplicate key"):
        decode(f"{NAMESPACE}.payment-requests", forged)


def test_none_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="empty message"):
        decode(None, None)


def test_oversized_payload_is_refused_both_ways() -> None:
    raw = sample_raw("TerminalStatusChanged")
    raw["reason"] = "x" * 100
    padded = _b(raw)[:-1] + b"," + b" " * MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(DecodeError, match="over the 65536-byte limit"):
        decode(None, padded)
    event = sample_event("PaymentCompleted")
    with pytest.raises(EncodeError, match="limit"):
        encode(event, max_bytes=100)
    assert decode(None, encode(event), max_bytes=len(encode(event))) == event


def test_encode_refuses_an_event_on_the_wrong_topic_and_non_events() -> None:
    with pytest.raises(EncodeError, match="does not belong") as info:
        encode(sample_event("CardTapped"), topic=f"{NAMESPACE}.payment-requests")
    assert info.value.field == "type"
    with pytest.raises(EncodeError, match="not a CardBus event"):
        encode({"type": "CardTapped"})  # type: ignore[arg-type]


def test_provider_topics_decode_their_union() -> None:
    topic = f"{NAMESPACE}.provider.bank-a.requests"
    for name in ("AuthorizationRequested", "ReversalRequested", "TransitLoadRequested"):
        event = sample_event(name)
        assert decode(topic, encode(event, topic=topic)) == event
    with pytest.raises(DecodeError) as info:
        decode(topic, encode(sample_event("PaymentRequested")))
    assert info.value.field == "type"


def test_faust_codec_is_the_same_encode_decode() -> None:
    name = faust_codec(f"{NAMESPACE}.terminal-results")
    assert name == f"{NAMESPACE}.terminal-results"
    assert faust_codec(f"{NAMESPACE}.terminal-results") == name  # registered once
    event = sample_event("PaymentCompleted")
    data = faust_codecs.dumps(name, event)
    assert data == encode(event)
    assert faust_codecs.loads(name, data) == event
    with pytest.raises(DecodeError) as info:
        faust_codecs.loads(name, encode(sample_event("CardTapped")))
    assert info.value.field == "type"


def test_faust_registry_wraps_our_error_with_it_as_cause() -> None:
    registry = Registry(key_serializer="raw", value_serializer=faust_codec(None))
    event = sample_event("SettlementBatchClosed")
    assert registry.loads_value(None, registry.dumps_value(None, event)) == event
    with pytest.raises(ValueDecodeError) as info:
        registry.loads_value(None, b'{"type": "CardTapped", "schema_version": 1}')
    assert isinstance(info.value.__cause__, DecodeError)


def test_faust_codec_clones_keep_the_topic() -> None:
    codec = EventCodec(topic=f"{NAMESPACE}.taps")
    clone = codec.clone()
    assert isinstance(clone, EventCodec) and clone.topic == f"{NAMESPACE}.taps"


def test_dead_letter_of_an_oversized_message_still_fits_the_limit() -> None:
    original = b"{" + b"A" * (MAX_PAYLOAD_BYTES + 10)
    fields = original_fields(original, key=b"T-0001")
    assert fields["original_truncated"] is True and fields["original_size"] == len(original)
    raw = sample_raw("EventDeadLettered")
    raw.update(fields)
    letter = model_for("EventDeadLettered").model_validate(raw)
    data = encode(letter, topic=f"{NAMESPACE}.dead-letters")
    assert len(data) <= MAX_PAYLOAD_BYTES
    assert decode(f"{NAMESPACE}.dead-letters", data) == letter
    assert MAX_ORIGINAL_BYTES < MAX_PAYLOAD_BYTES


def test_unknown_topic_is_a_config_error_at_wiring_time() -> None:
    from cardbus.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown topic"):
        faust_codec(f"{NAMESPACE}.nope")


def test_decode_as_returns_the_handled_types_and_refuses_the_others() -> None:
    from schemas.clock import ClockTicked
    from schemas.payments import PaymentRequested
    from streams.codec import decode_as

    topic = f"{NAMESPACE}.payment-requests"
    request = encode(sample_event("PaymentRequested"))
    tick = encode(sample_event("ClockTicked"))
    assert isinstance(decode_as(topic, request, PaymentRequested), PaymentRequested)
    assert isinstance(decode_as(topic, tick, (PaymentRequested, ClockTicked)), ClockTicked)
    with pytest.raises(DecodeError, match="ClockTicked is not handled here") as info:
        decode_as(topic, tick, PaymentRequested)  # on the topic, but not for this handler
    assert info.value.field == "type"
    with pytest.raises(DecodeError, match="does not belong on this topic"):
        decode_as(topic, encode(sample_event("CardTapped")), PaymentRequested)


def test_deeply_nested_json_is_a_decode_error_not_a_recursion_error() -> None:
    """Issue 22, low: 30,000-deep JSON raised RecursionError (a crash, no dead letter)."""
    from cardbus.errors import DecodeError as _DecodeError
    from streams.codec import decode as _decode

    deep = b'{"type":"PaymentRequested","schema_version":3,"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    with pytest.raises(_DecodeError, match="nested too deeply"):
        _decode(None, deep, max_bytes=len(deep))
