"""The codec's refusals with their exact reasons (a dead letter's reason is what an operator
reads), and its size bound as given by the caller."""

from __future__ import annotations

import json

import pytest

from cardbus.errors import DecodeError
from schemas.clock import ClockTicked
from schemas.payments import PaymentRequested
from schemas.samples import sample_event, sample_raw
from streams.codec import decode, decode_as, encode
from streams.topics import PAYMENT_REQUESTS


def test_the_caller_s_size_bound_holds() -> None:
    data = encode(sample_event("ClockTicked"))
    assert decode(None, data, max_bytes=len(data)).type == "ClockTicked"
    with pytest.raises(DecodeError, match=f"{len(data)} bytes is over the {len(data) - 1}-byte"):
        decode(None, data, max_bytes=len(data) - 1)
    with pytest.raises(DecodeError, match="over the 10-byte"):
        decode_as(None, data, ClockTicked, max_bytes=10)


def test_decode_as_names_the_types_it_expected() -> None:
    data = encode(sample_event("ClockTicked"))
    with pytest.raises(DecodeError, match=r"ClockTicked is not handled here \(expected "
                                          r"PaymentRequested, PaymentCancelled\)") as info:
        from schemas.payments import PaymentCancelled

        decode_as(PAYMENT_REQUESTS.name, data, (PaymentRequested, PaymentCancelled))
    assert info.value.field == "type"


def test_a_duplicate_key_is_named() -> None:
    text = '{"type":"ClockTicked","schema_version":1,"partition":1,"partition":2}'
    with pytest.raises(DecodeError, match=r"^partition: duplicate key") as info:
        decode(None, text.encode())
    assert info.value.field == "partition"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[1, 2]", "expected a JSON object, got list"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"type": 1}', "type: missing or not a string"),
    (b'{"type": "ClockTicked", "schema_version": "1"}',
     "schema_version: missing or not an integer"),
    (b'{"type": "ClockTicked", "schema_version": 1, "x": NaN}', "NaN is not valid JSON"),
])
def test_malformed_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(None, payload)


def test_a_nested_payload_is_refused_as_too_deep() -> None:
    deep = b'{"type":"X","schema_version":1,"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    with pytest.raises(DecodeError, match=r"^payload: JSON nested too deeply$"):
        decode(None, deep)


def test_a_type_off_its_topic_and_bad_fields_are_reported_by_field() -> None:
    with pytest.raises(DecodeError, match="'ClockTicked' does not belong on this topic"):
        decode(PAYMENT_REQUESTS.name.replace("payment-requests", "taps"),
               encode(sample_event("ClockTicked")))
    raw = sample_raw("PaymentRequested")
    raw["amount"] = {"amount": 1.5, "currency": "cny"}
    raw["merchant"]["mcc"] = "12"
    raw["terminal_id"] = ""
    raw["purpose"] = "gift"
    raw["card"]["atc"] = -1
    raw["card"]["psn"] = "G"
    with pytest.raises(DecodeError) as info:
        decode(None, json.dumps(raw).encode())
    reason = str(info.value)
    assert reason.startswith("PaymentRequested: ") and "; and 2 more" in reason
    assert info.value.field == reason.split(": ")[1].split(":")[0] != "event"
    assert "PaymentRequested." not in reason  # the union's branch name is not a field
