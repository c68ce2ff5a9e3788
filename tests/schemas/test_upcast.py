"""Upcasters: an old PaymentRequested (v1, flat amount) decodes into the current model."""

from __future__ import annotations

from typing import Any

import pytest

from cardbus.errors import DecodeError
from schemas.registry import CURRENT_VERSIONS
from schemas.samples import sample_raw
from schemas.upcast import registered, upcast, upcaster
from streams.codec import decode, decode_raw, encode
from streams.topics import NAMESPACE


def _v1(amount: Any = 1250, currency: str = "CNY") -> dict[str, Any]:
    raw = sample_raw("PaymentRequested")
    raw.pop("amount")
    raw.update(schema_version=1, amount_minor=amount, currency=currency)
    return raw


def _bytes(raw: dict[str, Any]) -> bytes:
    import json

    return json.dumps(raw).encode()


def test_v1_payment_request_upcasts_to_v2_with_money() -> None:
    event = decode(f"{NAMESPACE}.payment-requests", _bytes(_v1(990, "HKD")))
    assert event.schema_version == 3
    assert event.amount.amount == 990 and event.amount.currency == "HKD"  # type: ignore[attr-defined]
    # re-encoding writes the current version only
    assert b'"schema_version":3' in encode(event) and b"amount_minor" not in encode(event)


def test_decode_raw_keeps_the_original_object_for_seal_verification() -> None:
    original = _v1()
    event, raw = decode_raw(None, _bytes(original))
    assert raw == original and event.schema_version == 3


def test_v1_with_float_amount_is_still_refused_naming_the_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode(None, _bytes(_v1(12.5)))
    assert info.value.field == "amount.amount"


@pytest.mark.parametrize("version", [0, 4, 99])
def test_versions_without_a_path_are_refused(version: int) -> None:
    raw = sample_raw("PaymentRequested")
    raw["schema_version"] = version
    with pytest.raises(DecodeError, match="schema_version") as info:
        decode(None, _bytes(raw))
    assert info.value.field == "schema_version"


def test_registry_lists_the_shipped_step_and_refuses_duplicates() -> None:
    assert ("PaymentRequested", 1) in registered()
    with pytest.raises(ValueError, match="twice"):
        upcaster("PaymentRequested", 1)(lambda raw: raw)


def test_a_broken_upcaster_is_a_bug_not_bad_input() -> None:
    @upcaster("TestOnlyEvent", 1)
    def _skip(raw: dict[str, Any]) -> dict[str, Any]:
        raw["schema_version"] = 3
        return raw

    with pytest.raises(AssertionError, match="produced v3"):
        upcast({"type": "TestOnlyEvent", "schema_version": 1}, 3)


def test_current_versions_have_nothing_to_upcast() -> None:
    for name, version in CURRENT_VERSIONS.items():
        raw = sample_raw(name)
        assert upcast(dict(raw), version) == raw


def test_transit_v1_card_serial_becomes_a_reference_without_the_number() -> None:
    raw = sample_raw("TransitLoadRequested")
    raw.pop("card_token")
    raw["schema_version"] = 1
    raw["card_serial"] = "3100001234567893"  # a v1 event: the clear card number
    event, original = decode_raw(None, _bytes(raw))
    assert event.schema_version == 2 and original["card_serial"] == "3100001234567893"
    token = event.card_token  # type: ignore[attr-defined]
    assert token.startswith("tok_v1-") and "1234567893" not in token
