"""Small pure pieces of the audit: the fast canonical form, hygiene, chains, the bench."""

from __future__ import annotations

import json
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import checks
from audit.model import CHAIN, Fact, Record
from audit.scan import fast_canonical, hygiene

_keys = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.text(max_size=30))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_keys, inner, max_size=4), max_leaves=20)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=6))
def test_fast_canonical_is_rfc8785_for_float_free_json(data: dict[str, Any]) -> None:
    assert fast_canonical(data) == rfc8785.dumps(data)


def _rec(value: dict[str, Any], headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
    return Record("taps", 0, 5, 0, b"T-1", json.dumps(value).encode(), headers)


def test_hygiene_names_the_field() -> None:
    assert hygiene(_rec(v := {"merchant": {"name": "x 4111111111111111"}}), v) == [
        "merchant.name: holds a clear PAN"]
    assert hygiene(_rec(v := {"card": {"pin": "1234"}}), v) == [
        "card.pin: a field named 'pin' must never be on the bus"]
    assert hygiene(_rec(v := {"arqc": "4111111111111111", "id": "4111111111111112"}), v) == []
    assert hygiene(_rec({}, (("x-pan", b"4111111111111111"),)), {}) == [
        "header 'x-pan' holds a clear PAN"]


def _decision(offset: int, seq: int, prev: str, own: str) -> Fact:
    return Fact("provider-results", 0, offset, 0, "AuthorizationDecided", f"e{offset}", "c", "d",
                {"provider_id": "bank-a", "chain_id": "bank-a.p0", "sequence": seq,
                 "prev_hash": prev, "hash": own})


def test_closed_schemas_admit_no_unknown_or_sensitive_key() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    from audit.scan import closed_schema
    from schemas.base import Event
    from schemas.registry import ALL_EVENTS

    assert all(closed_schema(m) for m in ALL_EVENTS)  # every CardBus event today

    class Loose(BaseModel):
        model_config = ConfigDict(extra="ignore")  # an unknown key passes validation
        y: int

    class WithDict(Event):
        labels: dict[str, str]

    class WithAny(Event):
        blob: Any

    class WithLoose(Event):
        inner: list[Loose]

    class WithSensitiveName(Event):
        track2: str | None = None

    class Aliased(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        card_number: str = Field(alias="number")  # "card_number" could be sent too

    class WithAlias(Event):
        inner: Aliased

    for model in (WithDict, WithAny, WithLoose, WithSensitiveName, WithAlias):
        assert not closed_schema(model), model.__name__


def test_hygiene_of_a_closed_event_still_finds_a_pan_in_a_value() -> None:
    from schemas.samples import sample_event
    from streams.codec import decode_raw, encode

    event = sample_event("PaymentRequested")
    data = encode(event).replace(b'"merchant_id":"', b'"merchant_id":"4111111111111111 ', 1)
    rec = Record("payment-requests", 0, 1, 0, None, data)
    raw = json.loads(data)
    assert hygiene(rec, raw, event) == ["merchant.merchant_id: holds a clear PAN"]
    clean = encode(event)
    decoded, raw = decode_raw(None, clean)
    assert hygiene(Record("payment-requests", 0, 2, 0, None, clean), raw, decoded) == []


def test_chain_rules() -> None:
    g = "0" * 64
    good = [_decision(0, 0, g, "A"), _decision(1, 1, "A", "B"), _decision(2, 2, "B", "C")]
    window = checks.Window(0, 0)
    assert checks.check_chains(good, window) == ([], 1)
    swapped = [good[0], good[2], good[1]]
    found, _ = checks.check_chains(swapped, window)
    assert [(f.kind, f.offset) for f in found] == [(CHAIN, 2), (CHAIN, 1)]
    altered = [good[0], _decision(1, 1, "A", "X"), good[2]]
    found, _ = checks.check_chains(altered, window)
    assert [f.offset for f in found] == [2] and "prev_hash" in found[0].reason
    # a range that starts mid-chain anchors on its first decision
    assert checks.check_chains(good[1:], checks.Window(0, 0, partial=True))[0] == []
    assert checks.check_chains(good[1:], window)[0][0].offset == 1


def test_bench_text_report_judges_both_rates(monkeypatch: Any, capsys: Any) -> None:
    import argparse

    from bench import audit as bench
    from console.commands.audit import bench_audit_command

    figures = {"events": 100_000, "signed_events": 60_000, "mac_events": 35_000,
               "workers": 2, "cores": 2, "events_per_s": 16_000.0,
               "verify_only_per_s": 25_000.0, "ed25519_verify_per_s_1core": 18_000.0,
               "ed25519_verify_per_s_pool": 36_000.0, "ratio": 0.44,
               "events_per_cpu_s": 8_000.0, "verify_only_per_cpu_s": 13_000.0,
               "ed25519_verify_per_cpu_s": 18_000.0, "events_per_s_on_free_cores": 16_000.0,
               "verify_only_per_s_on_free_cores": 26_000.0, "load_average": 1.0, "ok": True}
    monkeypatch.setattr(bench, "run", lambda *_a, **_k: figures)
    args = argparse.Namespace(events=100_000, workers=0, cache=None, json=False)
    assert bench_audit_command(args) == 0
    out = capsys.readouterr().out
    assert "audit without re-derivation" in out
    assert ("verdict: clean; target 20,000 events/s: everything not met (16,000), without "
            "re-derivation met (25,000)") in out


def test_bench_reports_rates(tmp_path: Any) -> None:
    import gc

    from bench.audit import run

    threshold = gc.get_threshold()
    result = run(800, workers=2, cache=tmp_path)
    assert result["ok"] and result["events"] >= 800
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0  # collector restored
    assert result["events_per_s"] > 0 and result["ed25519_verify_per_s_pool"] > 0
    assert result["signed_events"] + result["mac_events"] + result["unsealed_events"] == \
        result["events"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789ab -", max_size=60))
def test_has_pan_bytes_agrees_with_contains_clear_pan(text: str) -> None:
    from audit.scan import has_pan_bytes
    from schemas.base import contains_clear_pan

    assert has_pan_bytes(text.encode()) == contains_clear_pan(text)


def test_has_pan_bytes_counts_maximal_runs_only() -> None:
    from audit.scan import has_pan_bytes

    pan = b"4111111111111111"
    assert has_pan_bytes(b'{"x":"' + pan + b'"}')
    assert has_pan_bytes(b"A" + pan + b"F")  # letters end a run
    assert not has_pan_bytes(b"123" + pan)  # 19 digits, Luhn fails
    assert not has_pan_bytes(pan + b"0000")  # 20 digits: no PAN in a longer run
    assert not has_pan_bytes(b"4111111111111112")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=19))
def test_luhn_bytes_agrees_with_luhn_ok(digits: str) -> None:
    from audit.scan import luhn_bytes
    from schemas.base import luhn_ok

    assert luhn_bytes(digits.encode()) == luhn_ok(digits)



@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(['"PIN"', '"pin"', '"Pan"', '"pan_token"', '"track2"', " ", ":",
                                 '"x"', "{", "}", ",", '"CVV2" :', '"clear_key"']), max_size=12))
def test_has_sensitive_key_is_a_case_blind_key_search(parts: list[str]) -> None:
    import re

    from audit.scan import SENSITIVE_FIELDS, has_sensitive_key

    slow = re.compile(r'"(?:' + "|".join(re.escape(n) for n in sorted(SENSITIVE_FIELDS))
                      + r')"\s*:', re.IGNORECASE)
    text = "".join(parts)
    assert has_sensitive_key(text.encode()) == bool(slow.search(text))


def _session_fact(kind: str, offset: int, session: str) -> Fact:
    return Fact("card-management" if kind == "CardManagementRequested" else "card-commands", 0,
                offset, 0, kind, f"e{offset}", session, f"d{offset}", {})


def test_every_card_session_has_one_outcome_and_every_outcome_a_request() -> None:
    window = checks.Window(end_ms=60_000, timeout_ms=10_000)
    by_type = {
        "CardManagementRequested": [_session_fact("CardManagementRequested", 0, "s1"),
                                    _session_fact("CardManagementRequested", 1, "s2"),
                                    _session_fact("CardManagementRequested", 2, "s3")],
        "CardManagementCompleted": [_session_fact("CardManagementCompleted", 3, "s1"),
                                    _session_fact("CardManagementCompleted", 4, "s3"),
                                    _session_fact("CardManagementCompleted", 5, "s3"),
                                    _session_fact("CardManagementCompleted", 6, "s9")]}
    findings, counts = checks.check_completeness(by_type, set(), window)
    reasons = sorted(f.reason for f in findings)
    assert counts["card_sessions"] == 3 and len(reasons) == 3, reasons
    assert "card-management outcome e6 answers no request" in reasons
    assert "card-management session s2 (request e1) has no outcome" in reasons
    assert "card-management session s3 has 2 outcomes" in reasons
