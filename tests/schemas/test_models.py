"""Event models: every type round-trips, is frozen/strict, and keeps its business rules."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from schemas.base import Event, Seal
from schemas.registry import ALL_EVENTS, CURRENT_VERSIONS, EVENT_TYPES, type_name, union_adapter
from schemas.samples import sample_event, sample_raw

NAMES = [type_name(m) for m in ALL_EVENTS]


@pytest.mark.parametrize("name", NAMES)
def test_every_event_round_trips_through_json(name: str) -> None:
    event = sample_event(name)
    again = type(event).model_validate_json(event.model_dump_json())
    assert again == event
    assert again.canonical_bytes() == event.canonical_bytes()


@pytest.mark.parametrize("model", ALL_EVENTS, ids=NAMES)
def test_models_are_frozen_strict_and_versioned(model: type[Event]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    assert get_origin(model.model_fields["type"].annotation) is Literal
    assert get_origin(model.model_fields["schema_version"].annotation) is Literal
    assert type_name(model) == model.__name__
    assert model.__name__.endswith("ed"), "event names are past tense"
    event = sample_event(type_name(model))
    with pytest.raises(ValidationError):
        event.correlation_id = "other"  # type: ignore[misc]


def _leaves(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list, dict, typing.Annotated):
        out = []
        args = get_args(annotation)
        if origin is typing.Annotated:
            args = args[:1]
        for arg in args:
            if arg is not Ellipsis:
                out.extend(_leaves(arg))
        return out
    return [annotation]


def _all_fields(model: type[BaseModel], path: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, info in model.model_fields.items():
        for leaf in _leaves(info.annotation):
            out.append((f"{path}{name}", leaf))
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                out.extend(_all_fields(leaf, f"{path}{name}."))
    return out


@pytest.mark.parametrize("model", ALL_EVENTS, ids=NAMES)
def test_no_float_anywhere(model: type[Event]) -> None:
    floats = [path for path, leaf in _all_fields(model) if leaf is float]
    assert floats == [], f"money and counters are integers; float fields: {floats}"


def test_money_refuses_float_and_string() -> None:
    raw = sample_raw("PaymentRequested")
    for bad in (12.5, 12.0, "1250"):
        raw["amount"] = {"amount": bad, "currency": "CNY"}
        with pytest.raises(ValidationError, match="amount"):
            EVENT_TYPES["PaymentRequested"].model_validate(raw)


def test_naive_datetime_is_refused_and_aware_is_normalised_to_utc() -> None:
    raw = sample_raw("CardTapped")
    raw["occurred_at"] = "2025-01-15T10:30:00"
    with pytest.raises(ValidationError, match="occurred_at"):
        EVENT_TYPES["CardTapped"].model_validate(raw)
    raw["occurred_at"] = "2025-01-15T18:30:00+08:00"
    event = EVENT_TYPES["CardTapped"].model_validate(raw)
    assert event.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event.occurred_at.hour == 10


@pytest.mark.parametrize(("name", "changes", "field"), [
    ("AuthorizationDecided", {"approved": True, "response_code": "05"}, "response_code"),
    ("AuthorizationDecided", {"approved": False, "response_code": "00"}, "response_code"),
    ("AuthorizationDecided", {"auth_code": None}, "auth_code"),
    ("PaymentRequested", {"pin_key_id": None}, "pin_key_id"),
    ("AuthorizationRequested", {"pin_block": None}, "pin_key_id"),
    ("ProviderRegistered", {"bin_ranges": []}, "bin_ranges"),
    ("ProviderRegistered", {"bin_ranges": [{"low": "622209", "high": "622202"}]}, "bin range"),
    ("ProviderKeysProvisioned", {"keys": []}, "keys"),
    ("SettlementBatchClosed", {"first_sequence": 50}, "last_sequence"),
    ("PaymentCompleted", {"masked_pan": "6222021234567890"}, "masked_pan"),
    ("CardTapped", {"atr": "3b8f"}, "atr"),
    ("AuthorizationDecided", {"prev_hash": "00" * 31}, "prev_hash"),
])
def test_business_rules_reject_inconsistent_events(name: str, changes: dict[str, Any],
                                                   field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        sample_event(name, **changes)


def test_settlement_net_must_add_up() -> None:
    raw = sample_raw("SettlementBatchClosed")
    raw["totals"][0]["net_amount"] += 1
    with pytest.raises(ValidationError, match="net_amount"):
        EVENT_TYPES["SettlementBatchClosed"].model_validate(raw)


def test_canonical_bytes_ignore_the_seal_and_cover_every_other_field() -> None:
    event = sample_event("PaymentRequested")
    unsealed = event.model_copy(update={"seal": None})
    other_seal = event.sealed(Seal(alg="HMAC-SHA256", key_id="k", value="AAAA"))
    assert event.canonical_bytes() == unsealed.canonical_bytes() == other_seal.canonical_bytes()
    changed = sample_event("PaymentRequested", terminal_id="T-0002")
    assert changed.canonical_bytes() != event.canonical_bytes()
    parsed = json.loads(event.canonical_bytes())
    assert "seal" not in parsed and parsed["amount"] == {"amount": 1250, "currency": "CNY"}


def test_registry_covers_every_model_once_with_its_version() -> None:
    assert set(EVENT_TYPES) == set(NAMES) and len(NAMES) == len(set(NAMES))
    assert CURRENT_VERSIONS["PaymentRequested"] == 3
    assert all(v >= 1 for v in CURRENT_VERSIONS.values())


def test_union_adapter_dispatches_on_type_and_refuses_foreign_types() -> None:
    adapter = union_adapter([EVENT_TYPES["AuthorizationDecided"], EVENT_TYPES["ReversalCompleted"]])
    event = adapter.validate_python(sample_raw("ReversalCompleted"))
    assert type(event).__name__ == "ReversalCompleted"
    with pytest.raises(ValidationError, match=r"union_tag_invalid|does not match any"):
        adapter.validate_python(sample_raw("CardTapped"))
    assert union_adapter(reversed(ALL_EVENTS[:3])) is union_adapter(ALL_EVENTS[:3])



# -- issue 22, low: text fields read as they are ---------------------------------------------

@pytest.mark.parametrize("bad", ["shop\x00", "shop\n", "\x1b[31mshop", "shop\x7f", "shop\x85",
                                 "paid\u202eRUSUBE", "\u2066shop\u2069", "a\u200fb", "a\u061cb"])
def test_text_refuses_control_and_bidi_characters(bad: str) -> None:
    from pydantic import ValidationError

    from schemas.values import Merchant

    with pytest.raises(ValidationError, match="control or bidi character"):
        Merchant(merchant_id="M-1", name=bad, mcc="5999")


def test_text_takes_any_other_unicode() -> None:
    from schemas.values import Merchant

    assert Merchant(merchant_id="M-1", name="Café 咖啡 — №1", mcc="5999").name == "Café 咖啡 — №1"
