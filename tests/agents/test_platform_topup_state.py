"""The platform's side of a top-up, with literal values: where each output goes and under which
key, what a timeout tells the terminal, when the funding payment is reversed and with which time,
and what a report changes in the pending payment."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from agents.platform import transit as platform_transit
from bench.sim import World
from schemas.payments import ReversalRequested
from schemas.transit import TransitLoadConfirmed
from tests.agents.conftest import NOW
from tests.agents.test_transit_decide import T, TopUp
from tests.agents.test_trust_transit import aborted, authorized, probe
from tests.agents.test_trust_transit import world as world


def _pid(kind: str, source: str) -> str:  # the platform's derived ids, as the audit re-derives
    return hashlib.sha256(f"platform:{kind}:{source}".encode()).hexdigest()[:32]


def test_a_top_up_that_times_out_reverses_the_payment_and_tells_the_terminal(
        world: World) -> None:
    top = TopUp(world)
    pending = top.pay()
    new, out = platform_transit.expire_load(pending, now=pending.deadline + timedelta(seconds=1),
                                            hsm=world.platform)
    (rev_role, rev_key, rev), (role, key, notice) = out.events
    assert (rev_role, rev_key) == ("provider:bank-a", pending.pan_token)
    assert isinstance(rev, ReversalRequested) and rev.reason == "transit_load_failed"
    assert rev.occurred_at == pending.deadline
    assert (role, key) == ("terminal", T)
    assert isinstance(notice, TransitLoadConfirmed)
    assert notice.event_id == _pid("load-timeout", pending.auth_event_id)
    assert (notice.producer, notice.operator_id, notice.card_token) == (
        "platform", "transit", platform_transit.NO_CARD)
    assert (notice.outcome, notice.confirmed, notice.balance) == ("voided", False, 0)
    assert notice.reason == "top-up timed out before the card was loaded: payment reversed"
    assert notice.request_event_id == pending.request_event_id
    assert notice.occurred_at == pending.deadline
    world.platform.verifier.verify_seal(notice.seal, notice.canonical_bytes())  # type: ignore[arg-type]
    assert (new.load_stage, new.reversed) == ("failed", True)


def test_a_card_that_took_the_load_moves_the_top_up_to_applied(world: World) -> None:
    top, auth = authorized(world)
    from tests.agents.test_operator_state import _applied

    later = NOW + timedelta(seconds=3)
    applied = _applied(top, auth, "00000000")
    new, out = platform_transit.card_report(applied, pending=top.pending, hsm=world.platform,
                                            received_at=later)
    ((role, key, fwd),) = out.events
    assert (role, key) == ("provider:transit", auth.card_token)
    assert (fwd.producer, fwd.occurred_at) == ("platform", later)
    assert new.load_stage == "applied"


def test_an_abort_before_mac2_reverses_at_the_time_it_arrived(world: World) -> None:
    top = TopUp(world)
    top.pay()
    top.forward(top.load_request())  # requested, no MAC2 yet
    from schemas.transit import TransitLoadAborted

    ab = top.terminal.mac_event(TransitLoadAborted(
        event_id="abort-0009", correlation_id=top.pending.payment_id, occurred_at=NOW,
        producer=f"terminal:{T}", terminal_id=T, operator_id="transit",
        request_event_id=top.pending.load_request_id, funding_pan_token=top.pending.pan_token,
        card_token=top.pending.card_token, reason="card removed before the load"))
    later = NOW + timedelta(seconds=4)
    new, out = platform_transit.card_report(ab, pending=top.pending, hsm=world.platform,
                                            received_at=later)
    (fwd_role, _, _), (role, key, rev) = out.events
    assert fwd_role == "provider:transit"
    assert (role, key) == ("provider:bank-a", top.pending.pan_token)
    assert isinstance(rev, ReversalRequested) and rev.occurred_at == later
    assert (new.load_stage, new.reversed) == ("failed", True)


def test_after_mac2_reports_are_the_operator_s_to_decide(world: World) -> None:
    top, auth = authorized(world)
    voiding, out = platform_transit.card_report(aborted(top, auth), pending=top.pending,
                                                hsm=world.platform, received_at=NOW)
    assert voiding.load_stage == "voiding" and len(out.events) == 1
    for stage in ("voiding", "reconcile"):
        pending = voiding.model_copy(update={"load_stage": stage})
        same, out = platform_transit.card_report(aborted(top, auth, n=2), pending=pending,
                                                 hsm=world.platform, received_at=NOW)
        assert same is pending and out.events == []  # the operator has this claim already
        evidence = probe(top, auth)
        new, out = platform_transit.card_report(aborted(top, auth, evidence, n=3),
                                                pending=pending, hsm=world.platform,
                                                received_at=NOW)
        assert new.load_stage == "voiding" and len(out.events) == 1


def test_a_refusal_for_a_top_up_already_reversed_is_only_forwarded(world: World) -> None:
    top, auth = authorized(world)
    evidence = probe(top, auth)
    from tests.agents.test_trust_transit import report

    ((_, _, fwd),) = report(world, top, aborted(top, auth, evidence))
    answer = top.operator(fwd)
    first = top.back(answer)  # voided: reversal + forward
    assert [r for r, _, _ in first] == ["provider:bank-a", "terminal"]
    again = top.back(answer)  # the same refusal again: no second reversal
    ((role, key, to_terminal),) = again
    assert (role, key) == ("terminal", T)
    assert to_terminal.producer == "platform" and to_terminal.event_id == answer.event_id
    world.platform.verifier.verify_seal(to_terminal.seal, to_terminal.canonical_bytes())  # type: ignore[arg-type,union-attr]
