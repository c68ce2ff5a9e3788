"""The audit over a simulated trail: clean passes; each kind of tampering is caught at the exact
event (no broker: the records are given to the engine directly)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from audit.keys import mac_sealer
from audit.model import CHAIN, HYGIENE, LEDGER, REDERIVE, REPLAY, SEAL, Record
from bench.trail import Trail
from cardbus import ceremony
from cardbus.crypto.signing import Signer, seal_event
from schemas.payments import AuthorizationDecided, PaymentCompleted, PaymentRequested
from schemas.settlement import SettlementBatchClosed
from streams import codec
from tests.audit.conftest import pick, replace, run

Trailed = tuple[Trail, Path]


def kinds_at(report, rec: Record) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.kind for f in report.findings
            if (f.topic, f.partition, f.offset) == (rec.topic, rec.partition, rec.offset)}


def test_clean_trail_passes(trail_home: Trailed) -> None:
    trail, home = trail_home
    report = run(trail.records, home)
    assert report.ok, report.findings[:5]
    assert report.events_read == len(trail.records)
    assert report.checks["ed25519"] > 0 and report.checks["hmac"] > 0
    assert report.checks["re-derived outputs matching byte for byte"] >= trail.payments
    assert report.checks["timeouts"] == trail.timeouts > 0
    assert report.checks["settlement batches"] > 0
    assert set(report.response_codes) >= {"00", "51", "55", "91"}
    assert report.ledger["bank-a"]["accounts"] > 0


def test_parallel_scan_gives_the_same_verdict(trail_home: Trailed) -> None:
    trail, home = trail_home
    decision = pick(trail.records, "provider-results", "AuthorizationDecided", 30)
    tampered = replace(trail.records, decision, value=decision.value.replace(  # type: ignore[union-attr]
        b'"sequence":', b'"sequence":1'))
    one, two = run(tampered, home, workers=1), run(tampered, home, workers=2)
    assert not one.ok
    assert one.findings == two.findings


def test_altered_decision_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 40)
    raw = json.loads(rec.value)  # type: ignore[arg-type]
    raw["amount"]["amount"] += 1
    report = run(replace(trail.records, rec, value=json.dumps(raw).encode()), home)
    assert {SEAL, REDERIVE} <= kinds_at(report, rec)
    chain = [f for f in report.findings if f.kind == CHAIN]
    assert chain and chain[0].topic == rec.topic and chain[0].offset > rec.offset
    assert f"{raw['event_id']}" in " ".join(f.reason for f in report.findings)


def test_altered_and_resigned_decision_breaks_the_chain(trail_home: Trailed) -> None:
    """An insider with the provider's key re-signs an altered decision: the seal verifies, the
    hash chain and the re-derivation do not."""
    trail, home = trail_home
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 41)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationDecided)
    hsm = ceremony.provider_hsm(ev.provider_id, home)
    forged = hsm.sign_event(ev.model_copy(update={"amount": ev.amount.model_copy(
        update={"amount": ev.amount.amount + 100})}))
    report = run(replace(trail.records, rec, forged), home)
    assert kinds_at(report, rec) == {REDERIVE}
    assert any(f.kind == CHAIN and f.topic == rec.topic and f.partition == rec.partition
               and f.offset > rec.offset for f in report.findings)


def test_deleted_decision_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 50)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationDecided)
    report = run(replace(trail.records, rec), home)
    chain = [f for f in report.findings if f.kind == CHAIN]
    assert chain and f"follows {ev.sequence - 1}" in chain[0].reason
    missing = [f for f in report.findings if f.kind == REDERIVE]
    assert missing and ev.event_id in missing[0].reason
    assert missing[0].topic == f"provider.{ev.provider_id}.requests"


def test_forged_signature_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 7)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentCompleted)
    key_id = ev.seal.key_id  # type: ignore[union-attr]
    forged = seal_event(ev.model_copy(update={"response_code": "00", "approved": True,
                                              "auth_code": "ABC123"}),
                        Signer.generate(key_id))
    report = run(replace(trail.records, rec, forged), home)
    seal = [f for f in report.findings if f.kind == SEAL]
    assert [(f.topic, f.partition, f.offset) for f in seal] == [
        (rec.topic, rec.partition, rec.offset)]
    assert "does not verify" in seal[0].reason


def test_forged_decision_signature_is_caught_after_the_re_derivation(
        trail_home: Trailed) -> None:
    """Provider outputs identical to their re-derivation are proven without a second verify;
    a decision signed by another key is not identical, so its seal is verified and fails."""
    trail, home = trail_home
    clean = run(trail.records, home)
    assert clean.checks["provider seals proven by the byte-identical re-derivation"] == \
        clean.checks["re-derived outputs matching byte for byte"] > 0
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 11)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationDecided)
    forged = seal_event(ev, Signer.generate(ev.seal.key_id))  # type: ignore[union-attr]
    report = run(replace(trail.records, rec, forged), home)
    seal = [f for f in report.findings if f.kind == SEAL]
    assert [(f.topic, f.partition, f.offset) for f in seal] == [
        (rec.topic, rec.partition, rec.offset)]
    assert "does not verify" in seal[0].reason
    assert REDERIVE in kinds_at(report, rec)  # and it is not the decision the bank made


def test_replayed_request_is_caught(trail_home: Trailed) -> None:
    """The same card cryptogram under a new event id, with a valid terminal MAC."""
    trail, home = trail_home
    rec = pick(trail.records, "payment-requests", "PaymentRequested", 12)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentRequested)
    from audit.keys import build_keybook

    sealer = mac_sealer(build_keybook(home, []), ev.seal.key_id)  # type: ignore[union-attr]
    assert sealer is not None
    replayed = seal_event(ev.model_copy(update={"event_id": "f" * 32,
                                                "correlation_id": "e" * 32}), sealer)
    last = max(r.offset for r in trail.records if (r.topic, r.partition) == (
        rec.topic, rec.partition))
    extra = dataclasses.replace(rec, offset=last + 1, value=codec.encode(replayed),
                                timestamp_ms=rec.timestamp_ms + 1)
    report = run([*trail.records, extra], home)
    assert kinds_at(report, extra) >= {REPLAY}
    assert ev.event_id in next(f.reason for f in report.findings if f.kind == REPLAY)
    assert not [f for f in report.findings if f.kind == SEAL]


def test_ledger_change_without_decision_is_caught(trail_home: Trailed) -> None:
    """A settlement batch stating more than its decisions, re-signed by the provider's key."""
    trail, home = trail_home
    rec = pick(trail.records, "settlements", "SettlementBatchClosed", 1)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, SettlementBatchClosed) and ev.totals
    total = ev.totals[0]
    bigger = total.model_copy(update={"approved_count": total.approved_count + 1,
                                      "approved_amount": total.approved_amount + 5_000,
                                      "net_amount": total.net_amount + 5_000})
    forged = ceremony.provider_hsm(ev.provider_id, home).sign_event(
        ev.model_copy(update={"totals": (bigger, *ev.totals[1:])}))
    report = run(replace(trail.records, rec, forged), home)
    assert kinds_at(report, rec) == {LEDGER, REDERIVE}
    assert ev.batch_id in next(f.reason for f in report.findings if f.kind == LEDGER)


def test_clear_pan_in_a_header_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "taps", "CardTapped", 3)
    leaky = dataclasses.replace(rec, headers=(("debug", b"card 4111111111111111"),))
    report = run([leaky if r is rec else r for r in trail.records], home)
    assert kinds_at(report, rec) == {HYGIENE}


def test_without_key_stores_reports_what_was_not_checked(trail_home: Trailed,
                                                         tmp_path: Path) -> None:
    trail, _ = trail_home
    report = run(trail.records, tmp_path)
    assert report.ok
    assert report.checks["ed25519"] > 0  # providers' and terminals' public keys are on the bus
    assert any("no platform key store" in reason for reason in report.not_checked)
    assert any("not re-derived" in note for note in report.notes)


def test_dead_lettered_input_is_listed_not_failed(trail_home: Trailed) -> None:
    """Junk the platform set aside (with its dead letter) is listed; junk nobody set aside
    is a finding."""
    from datetime import UTC, datetime

    from schemas.deadletters import EventDeadLettered, original_fields

    trail, home = trail_home
    last = max(r.offset for r in trail.records if (r.topic, r.partition) == (
        "payment-requests", 0))
    junk = Record("payment-requests", 0, last + 1, trail.records[-1].timestamp_ms, b"x",
                  b'{"type":"PaymentRequested","schema_version":2}')
    letter = EventDeadLettered(
        event_id="d" * 32, correlation_id="cardbus.payment-requests:0",
        occurred_at=datetime.now(UTC), producer="platform", reason="PaymentRequested: bad",
        error_code="decode", original_topic="cardbus.payment-requests", original_partition=0,
        original_offset=junk.offset, **original_fields(junk.value or b"", junk.key))
    dl = Record("dead-letters", 0, 0, junk.timestamp_ms, b"cardbus.payment-requests",
                codec.encode(letter))
    alone = run([*trail.records, junk], home)
    assert [(f.kind, f.offset) for f in alone.findings] == [("decode", junk.offset)]
    listed = run([*trail.records, junk, dl], home)
    assert listed.ok, listed.findings
    assert [(d.original, d.error_code) for d in listed.dead_letters] == [
        (f"payment-requests/0@{junk.offset}", "decode")]


def test_forged_platform_request_is_caught_by_the_replay(trail_home: Trailed) -> None:
    """A provider request signed by a key that is not the platform's (the re-derivation checks
    these signatures, as the provider does; the scan leaves them to it)."""
    from schemas.payments import AuthorizationRequested

    trail, home = trail_home
    rec = pick(trail.records, "provider.bank-a.requests", "AuthorizationRequested", 5)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationRequested)
    forged = seal_event(ev, Signer.generate(ev.seal.key_id))  # type: ignore[union-attr]
    report = run(replace(trail.records, rec, forged), home)
    assert SEAL in kinds_at(report, rec)
    assert report.checks["deferred to the re-derivation"] > 0
