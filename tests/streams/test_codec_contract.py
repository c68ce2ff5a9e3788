"""The codec's contract where the mutation run found it untested: each one-line reason exactly,
the fast path taken for what ``encode`` writes, the per-topic lookup filled on first use, the
"and N more" boundary, and the Faust codec's registration and chaining."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from faust.serializers import codecs as faust_codecs

from cardbus.errors import DecodeError, EncodeError
from schemas.payments import PaymentRequested
from schemas.samples import sample_event
from streams import codec
from streams.topics import PAYMENT_REQUESTS, PROVIDER_REGISTRATIONS, topic_spec


def test_encoding_what_is_not_an_event_names_its_type() -> None:
    with pytest.raises(EncodeError) as err:
        codec.encode({"type": "PaymentRequested"})  # type: ignore[arg-type]
    assert str(err.value) == "not a CardBus event: dict"


def test_a_type_from_another_topic_names_the_topic_s_types() -> None:
    data = codec.encode(sample_event("ProviderRegistered"))
    with pytest.raises(DecodeError) as err:
        codec.decode(PAYMENT_REQUESTS.name, data)
    allowed = ", ".join(topic_spec(PAYMENT_REQUESTS.name).value_types)
    assert str(err.value) == (f"type: 'ProviderRegistered' does not belong on this topic "
                              f"(expected one of {allowed})")
    assert err.value.field == "type"


def test_a_null_value_is_named_a_tombstone() -> None:
    with pytest.raises(DecodeError) as err:
        codec.parse(None)
    assert str(err.value) == "payload: empty message (tombstone or null value)"


def test_what_encode_writes_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    data = codec.encode(sample_event("PaymentRequested"))
    assert codec._parse_exact(data) == orjson.loads(data)

    def strict(_data: Any) -> dict[str, Any]:
        raise AssertionError("the strict parser was used for a canonical payload")

    monkeypatch.setattr(codec, "_parse_strict", strict)
    assert codec.parse(data) == json.loads(data)


def test_other_json_goes_to_the_strict_path() -> None:
    data = codec.encode(sample_event("PaymentRequested"))
    spaced = json.dumps(json.loads(data), indent=1).encode()
    assert codec._parse_exact(spaced) is None  # other spacing: not the bytes orjson writes
    assert codec._parse_exact(b"[1, 2]") is None and codec._parse_exact(b"[1,2]") is None
    assert codec._parse_exact(b"{nope") is None
    assert codec.parse(spaced) == json.loads(data)


def test_the_topic_lookup_is_filled_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_BY_TOPIC", {})
    event = sample_event("PaymentRequested")
    assert codec.decode(PAYMENT_REQUESTS.name, codec.encode(event)) == event
    spec = topic_spec(PAYMENT_REQUESTS.name)
    cached = codec._BY_TOPIC[PAYMENT_REQUESTS.name]
    assert cached == (spec.adapter, spec.value_types)
    assert codec._topic_types(PAYMENT_REQUESTS.name) is cached


def _raw(name: str) -> dict[str, Any]:
    return json.loads(codec.encode(sample_event(name)))


def test_a_model_level_error_is_reported_at_the_event() -> None:
    raw = {**_raw("ProviderRegistered"), "kind": "bank", "bin_ranges": []}
    with pytest.raises(DecodeError) as err:
        codec.decode(PROVIDER_REGISTRATIONS.name, json.dumps(raw).encode())
    assert str(err.value) == ("ProviderRegistered: event: Value error, bin_ranges: a bank "
                              "provider needs at least one BIN range")
    assert err.value.field == "event"


def test_with_a_single_type_adapter_the_field_path_is_kept() -> None:
    from pydantic import TypeAdapter

    raw = _raw("PaymentRequested")
    del raw["terminal_id"]
    with pytest.raises(DecodeError) as err:
        codec.decode(TypeAdapter(PaymentRequested), json.dumps(raw).encode())
    assert str(err.value) == "PaymentRequested: terminal_id: Field required"
    assert err.value.field == "terminal_id"


def test_a_type_outside_a_given_union_is_a_type_error() -> None:
    data = codec.encode(sample_event("ProviderRegistered"))
    with pytest.raises(DecodeError) as err:
        codec.decode(topic_spec(PAYMENT_REQUESTS.name).adapter, data)
    assert str(err.value).startswith(
        "ProviderRegistered: type: 'ProviderRegistered' does not belong on this topic (")
    assert err.value.field == "type"


def _missing(n: int) -> DecodeError:
    """The reason for a PaymentRequested missing its first ``n`` required fields."""
    raw = _raw("PaymentRequested")
    fields = [k for k in ("event_id", "correlation_id", "producer", "terminal_id", "merchant",
                          "amount", "card") if k in raw]
    assert len(fields) >= n
    for key in fields[:n]:
        del raw[key]
    with pytest.raises(DecodeError) as err:
        codec.decode(PAYMENT_REQUESTS.name, json.dumps(raw).encode())
    return err.value


def test_five_errors_are_listed_and_a_sixth_is_counted() -> None:
    five, six = str(_missing(5)), str(_missing(6))
    assert five.count("Field required") == 5 and "more" not in five
    assert six.count("Field required") == 5 and six.endswith("; and 1 more")


def test_the_faust_codec_is_registered_once_per_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    name = PAYMENT_REQUESTS.name
    monkeypatch.delitem(faust_codecs.codecs, name, raising=False)
    assert codec.faust_codec(name) == name
    registered = faust_codecs.codecs[name]
    assert isinstance(registered, codec.EventCodec) and registered.topic == name
    assert codec.faust_codec(name) == name and faust_codecs.codecs[name] is registered
    monkeypatch.delitem(faust_codecs.codecs, codec.ANY_CODEC, raising=False)
    assert codec.faust_codec() == codec.ANY_CODEC
    assert faust_codecs.codecs[codec.ANY_CODEC].topic is None


def test_the_event_codec_checks_its_topic_and_chains_with_faust_codecs() -> None:
    event = sample_event("PaymentRequested")
    plain = codec.EventCodec(topic=PAYMENT_REQUESTS.name)
    with pytest.raises(EncodeError):
        plain.dumps(sample_event("ProviderRegistered"))  # not a type of this topic
    chained = plain | faust_codecs.get_codec("binary")
    data = chained.dumps(event)
    assert data == base64.b64encode(codec.encode(event, topic=PAYMENT_REQUESTS.name))
    assert chained.loads(data) == event
    assert chained.kwargs == {"topic": PAYMENT_REQUESTS.name}
    extra = codec.EventCodec(topic=PAYMENT_REQUESTS.name, note="kept for clones")
    assert (extra | faust_codecs.get_codec("binary")).kwargs == {
        "topic": PAYMENT_REQUESTS.name, "note": "kept for clones"}
