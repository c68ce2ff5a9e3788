"""The platform re-derived (issue 20 item 2): its answers, forwarded requests, timeouts and
reversals recomputed from its recorded inputs; each tampering one ``platform`` finding, at the
record it happened to. The platform's key signs the forgeries (an insider: the seals hold)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

from agents.platform import decide
from agents.providers.announce import key_provisioning, registration
from agents.providers.bank_a import adapter as bank_a
from agents.providers.transit import adapter as operator
from audit import checks
from audit.model import PLATFORM, REDERIVE, AuditReport, Record
from audit.platform import GlobalState
from audit.rederive import replay_partition
from audit.scan import fact_of
from bench.sim import World
from bench.trail import Trail
from cardbus import ceremony
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cardbus.response_codes import ISSUER_UNAVAILABLE
from schemas.base import Event, Money
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCompleted,
    PaymentRequested,
)
from schemas.transit import TransitLoadAuthorized
from schemas.values import BinRange
from streams import codec
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp
from tests.agents.test_trust_platform import admitted, rogue
from tests.audit.conftest import pick, replace, run
from tests.audit.test_follow import follow_all

Trailed = tuple[Trail, Path]


def _where(rec: Record) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _platform(report: AuditReport) -> list[tuple[str, int, int]]:
    return [f.where() for f in report.findings if f.kind == PLATFORM]


def _sign(home: Path, ev: Event, **update: object) -> Event:
    return ceremony.platform_hsm(home).sign_event(ev.model_copy(update={**update,
                                                                         "seal": None}))


def _append(records: list[Record], topic: str, like: Record, event: Event) -> list[Record]:
    """``records`` with ``event`` appended to ``topic`` (``like``'s partition, key, time)."""
    offset = 1 + max((r.offset for r in records
                      if r.topic == topic and r.partition == like.partition), default=-1)
    return [*records, dataclasses.replace(like, topic=topic, offset=offset,
                                          value=codec.encode(event))]


def test_clean_trail_re_derives_every_payment(trail_home: Trailed) -> None:
    """Every payment's outputs re-derived, the timed-out ones in the order the platform took
    their decision and their clock tick (the decision was on the bus first)."""
    trail, home = trail_home
    report = run(trail.records, home)
    assert report.ok, report.findings[:3]
    other = report.checks["payments re-derived in another order of their topics"]
    assert report.checks["payments re-derived"] + other == trail.payments
    assert other == trail.timeouts
    assert not [n for n in report.notes if "platform" in n]


def test_request_routed_to_the_wrong_bank(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "provider.bank-a.requests", "AuthorizationRequested", 3)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, AuthorizationRequested)
    moved = _append(replace(trail.records, rec), "provider.bank-b.requests", rec,
                    _sign(home, ev, provider_id="bank-b"))
    report = run(moved, home)
    assert _platform(report) == [_where(moved[-1])]
    assert "re-derived on provider.bank-a.requests" in next(
        f.reason for f in report.findings if f.kind == PLATFORM)


def test_answer_with_a_changed_amount(trail_home: Trailed) -> None:
    """The bank's code forwarded, the amount changed: no ``answer`` finding (the codes agree),
    one platform finding at the answer."""
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 12)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentCompleted) and ev.response_code != ISSUER_UNAVAILABLE
    changed = _sign(home, ev, amount=Money(amount=ev.amount.amount + 100,
                                           currency=ev.amount.currency))
    report = run(replace(trail.records, rec, changed), home)
    assert [(f.kind, f.where()) for f in report.findings] == [(PLATFORM, _where(rec))]
    assert "amount" in report.findings[0].reason


def test_the_follower_finds_a_changed_answer_where_the_batch_audit_does(
        trail_home: Trailed) -> None:
    """``--follow`` re-derives the platform too: the same finding, once the grace passed."""
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 12)
    ev = codec.decode(None, rec.value)
    changed = _sign(home, ev, amount=Money(amount=ev.amount.amount + 100,
                                           currency=ev.amount.currency))
    records = replace(trail.records, rec, changed)
    assert [(f.kind, f.where()) for f in follow_all(records, home)] == [(PLATFORM, _where(rec))]


def test_timeout_that_was_not_due(trail_home: Trailed) -> None:
    """An answer the bank gave in time replaced by a 91 timeout (with its timeout reversal to
    the bank): no clock tick had passed the deadline."""
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 14)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentCompleted) and ev.provider_id and ev.response_code == "00"
    req = next(e for r in trail.records if r.topic == "payment-requests"
               and isinstance(e := codec.decode(None, r.value), PaymentRequested)
               and e.correlation_id == ev.correlation_id)
    hsm = ceremony.platform_hsm(home)
    timeout = decide.complete(req.event_id, ev.correlation_id, ev.terminal_id, ev.masked_pan,
                              ev.amount, ISSUER_UNAVAILABLE, occurred_at=ev.occurred_at,
                              hsm=hsm, provider_id=ev.provider_id, kind="timeout")
    report = run(replace(trail.records, rec, timeout), home)
    assert _platform(report) == [_where(rec)]
    assert 'response_code: recorded "91", re-derived "00"' in next(
        f.reason for f in report.findings if f.kind == PLATFORM)


def test_extra_reversal_of_an_answered_approval(trail_home: Trailed) -> None:
    """A reversal of an approval the terminal was told about (the money given back behind the
    merchant's back): no input of the payment gives it."""
    trail, home = trail_home
    decision = next(e for r in trail.records if r.topic == "provider-results"
                    and isinstance(e := codec.decode(None, r.value), AuthorizationDecided)
                    and e.approved and e.provider_id == "bank-a")
    like = next(r for r in trail.records if r.topic == "provider.bank-a.requests"
                and f'"event_id":"{decision.request_event_id}"'.encode() in (r.value or b""))
    out = decide.reverse_unmatched(decision, at=decision.occurred_at + timedelta(seconds=1),
                                   hsm=ceremony.platform_hsm(home))
    [(_role, _key, reversal)] = out.events
    records = _append(trail.records, "provider.bank-a.requests", like, reversal)
    report = run(records, home)
    assert _platform(report) == [_where(records[-1])]


def test_forwarded_pan_of_another_payment(trail_home: Trailed) -> None:
    """A forwarded request carrying another payment's encrypted PAN (re-sealed): everything
    else as re-derived, but the fresh encryption does not decrypt to the terminal's PAN for
    this payment."""
    trail, home = trail_home
    recs = [r for r in trail.records if r.topic == "provider.bank-a.requests"
            and b'"type":"AuthorizationRequested"' in (r.value or b"")]
    a = codec.decode(None, recs[2].value)
    b = codec.decode(None, recs[5].value)
    assert isinstance(a, AuthorizationRequested) and isinstance(b, AuthorizationRequested)
    swapped = _sign(home, a, card=a.card.model_copy(
        update={"pan_encrypted": b.card.pan_encrypted}))
    report = run(replace(trail.records, recs[2], swapped), home)
    assert _platform(report) == [_where(recs[2])]
    assert "does not decrypt" in next(f.reason for f in report.findings if f.kind == PLATFORM)


def test_answer_to_a_payment_the_platform_never_received(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec = pick(trail.records, "terminal-results", "PaymentCompleted", 3)
    ev = codec.decode(None, rec.value)
    forged = _sign(home, ev, event_id="f" * 32, correlation_id="e" * 32)
    records = _append(trail.records, "terminal-results", rec, forged)
    report = run(records, home)
    assert _platform(report) == [_where(records[-1])]
    assert "received nothing" in next(f.reason for f in report.findings if f.kind == PLATFORM)


def test_transit_operator_load_answer_re_derived_and_a_forged_mac2_found() -> None:
    """The operator's MAC2 answer to a forwarded load request is re-derived byte for byte (its
    purse record threaded like the provider app); one with another MAC2 (re-sealed by the
    operator's key) is one ``rederive`` finding at it."""
    world = World.build([bank_a, operator], [T], NOW)
    top = TopUp(world)
    top.pay()
    forwarded = top.forward(top.load_request())
    answer = top.operator(forwarded)
    assert isinstance(answer, TransitLoadAuthorized)
    request = Record("provider.transit.requests", 0, 0, _ms(NOW), None, codec.encode(forwarded))
    op_hsm = world.providers["transit"]
    replay = replay_partition(operator, op_hsm, world.platform.verifier, 0, [request])
    assert [o.data for o in replay.outputs] == [codec.encode(answer)]
    forged = op_hsm.sign_event(answer.model_copy(update={"mac2": "0" * len(answer.mac2),
                                                         "seal": None}))
    at = Record("provider-results", 1, 7, _ms(NOW), None, codec.encode(forged))
    fact = fact_of(at, forged, b"")
    found, matched = checks.compare_rederived(
        [replay], {(at.topic, forged.event_id): fact}, {fact.where(): at.value},
        checks.Window(_ms(NOW) + 60_000, 10_000))
    assert [(f.kind, f.where()) for f in found] == [(REDERIVE, _where(at))]
    assert "mac2" in found[0].reason and not matched


def test_routes_follow_the_admissions_when_the_trail_has_them() -> None:
    """The audit's routes as the platform's: a registration waits for its operator's
    admission, keys that came first wait for the registration, an unadmitted provider (its
    own proof of possession alone) is never routed."""
    world = World.build([bank_a], [T], NOW)
    hsm = world.providers["bank-a"]
    reg = registration(bank_a, hsm, NOW)
    admission = admitted(world, hsm, ranges=reg.bin_ranges, aids=reg.payment_aids)
    rogue_hsm = ProviderHsm("rogue", memory_keystore())
    state = GlobalState(world.platform.verifier, admitted=True)

    def feed(ev: Event) -> None:
        state.apply(Record("x", 0, 0, _ms(NOW), None, codec.encode(ev)))

    feed(key_provisioning(hsm, NOW))
    feed(reg)
    feed(rogue(rogue_hsm, (BinRange(low="100000", high="199999"),)))
    assert state.routes == {}
    feed(admission)
    assert set(state.routes) == {"bank-a"} and state.routes["bank-a"]["keys_ready"]
    tofu = GlobalState(world.platform.verifier, admitted=False)  # an in-process trail's
    tofu.apply(Record("x", 0, 0, _ms(NOW), None, codec.encode(reg)))
    assert set(tofu.routes) == {"bank-a"} and not tofu.routes["bank-a"]["keys_ready"]
