"""The platform's pure rules, state by state, with literal values: cancellation, reversal of an
unclaimed approval, status changes, expiry. (Mutation testing showed what no test pinned.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import decide
from bench.sim import World
from cardbus.crypto.signing import Signer
from cardbus.response_codes import ISSUER_UNAVAILABLE
from schemas.base import Money, header
from schemas.payments import PaymentCancelled, ReversalRequested
from schemas.terminals import TerminalStatusChanged
from tests.agents.conftest import NOW

T = "T-0001"
TOKEN = "tok_" + "a" * 43


def pending(**changes: object) -> decide.Pending:
    base = decide.Pending(payment_id="pay-1", request_event_id="req-00000001",
                          auth_event_id="auth-0000001", terminal_id=T, provider_id="bank-a",
                          pan_token=TOKEN, masked_pan="622202******1234",
                          amount=Money(amount=800, currency="CNY"),
                          deadline=NOW + timedelta(seconds=3))
    return base.model_copy(update=changes)


def cancel_event(world: World, *, terminal: str = T, request: str = "req-00000001",
                 mac: bool = True) -> PaymentCancelled:
    ev = PaymentCancelled(**header(f"terminal:{terminal}", "pay-1", NOW), terminal_id=terminal,
                          request_event_id=request, pan_token=TOKEN)
    return world.terminals[T].mac_event(ev) if mac else ev


def reversals(out: decide.Out) -> list[ReversalRequested]:
    return [ev for _r, _k, ev in out.events if isinstance(ev, ReversalRequested)]


def test_a_cancel_needs_the_terminal_s_mac(world: World) -> None:
    with pytest.raises(decide.Rejected, match="terminal MAC of PaymentCancelled"):
        decide.cancel(cancel_event(world, mac=False), pending(), received_at=NOW,
                      hsm=world.platform)


def test_a_cancel_for_no_payment_changes_nothing(world: World) -> None:
    assert decide.cancel(cancel_event(world), None, received_at=NOW,
                         hsm=world.platform) == (None, decide.Out())


def test_a_cancel_must_name_this_payment_s_request(world: World) -> None:
    with pytest.raises(decide.Rejected, match="names request req-other1 of T-0001"):
        decide.cancel(cancel_event(world, request="req-other1"), pending(), received_at=NOW,
                      hsm=world.platform)


def test_a_cancel_from_another_terminal_for_this_payment_is_refused(world: World) -> None:
    other = world.add_terminal("T-0002", NOW)
    ev = other.mac_event(PaymentCancelled(**header("terminal:T-0002", "pay-1", NOW),
                                          terminal_id="T-0002", request_event_id="req-00000001",
                                          pan_token=TOKEN))
    with pytest.raises(decide.Rejected, match="names request req-00000001 of T-0002"):
        decide.cancel(ev, pending(), received_at=NOW, hsm=world.platform)


@pytest.mark.parametrize("state", ["cancelled", "timed_out"])
def test_an_undone_payment_is_not_undone_twice(world: World, state: str) -> None:
    new, out = decide.cancel(cancel_event(world), pending(state=state, approved=True),
                             received_at=NOW, hsm=world.platform)
    assert new is not None and new.state == "cancelled" and out.events == []


@pytest.mark.parametrize(("changes", "undo"), [
    ({"state": "sent"}, True),
    ({"state": "answered", "approved": True}, True),
    ({"state": "answered", "approved": True, "load_stage": "await_load"}, True),
    ({"state": "answered", "approved": True, "reversed": True}, False),
    ({"state": "answered", "approved": False}, False),
    ({"state": "answered", "approved": True, "load_stage": "requested"}, False),
    ({"state": "answered", "approved": False, "load_stage": "none"}, False),
])
def test_what_a_cancel_undoes(world: World, changes: dict[str, object], undo: bool) -> None:
    before = pending(**changes)
    new, out = decide.cancel(cancel_event(world), before, received_at=NOW, hsm=world.platform)
    assert new is not None and new.state == "cancelled"
    assert new.reversed is (before.reversed or undo)
    (rev,) = reversals(out) if undo else (None,)
    if undo:
        assert rev is not None and (rev.reason, rev.original_event_id, rev.amount.amount,
                                    rev.provider_id, rev.occurred_at) == (
            "terminal_cancelled", "auth-0000001", 800, "bank-a", NOW)
    else:
        assert out.events == []


def test_an_unclaimed_approval_is_reversed_and_a_decline_is_not(world: World) -> None:
    card = world.issue("bank-a")
    req = world.pay(T, card, amount=700, when=NOW)
    _, out = decide.request_payment(req, received_at=NOW, terminal=world.terminal_records[T],
                                    routes=world.routes, hsm=world.platform)
    ((_, _, auth),) = out.events
    from tests.agents.test_provider_decide import Ledger

    ledger = Ledger(world, "bank-a")
    ledger.open(card)
    approved = ledger.decide(auth).decision  # type: ignore[arg-type]
    at = NOW + timedelta(seconds=40)
    (rev,) = reversals(decide.reverse_unmatched(approved, at=at, hsm=world.platform))
    assert (rev.reason, rev.original_event_id, rev.provider_id, rev.amount, rev.occurred_at,
            rev.correlation_id) == ("unmatched_approval", approved.request_event_id, "bank-a",
                                    approved.amount, at, approved.correlation_id)
    declined = approved.model_copy(update={"approved": False, "response_code": "51",
                                           "auth_code": None})
    assert decide.reverse_unmatched(declined, at=at, hsm=world.platform).events == []


def test_status_changes_only_by_the_operator_for_a_known_terminal(world: World) -> None:
    ev = TerminalStatusChanged(**header("cli", T, NOW), terminal_id=T, status="suspended",
                               reason="lost")
    with pytest.raises(decide.Rejected, match="status change for unknown terminal T-0001"):
        decide.change_status(world.platform.sign_event(ev), None, world.platform.verifier)
    forged = ev.model_copy(update={"seal": Signer.generate("x").seal(ev.canonical_bytes())})
    with pytest.raises(decide.Rejected, match="status change of T-0001"):
        decide.change_status(forged, world.terminal_records[T], world.platform.verifier)
    done = decide.change_status(world.platform.sign_event(ev), world.terminal_records[T],
                                world.platform.verifier)
    assert done.status == "suspended"


@pytest.mark.parametrize(("offset", "expired"), [(timedelta(microseconds=-1), False),
                                                  (timedelta(0), True)])
def test_a_payment_expires_at_its_deadline_exactly(world: World, offset: timedelta,
                                                   expired: bool) -> None:
    p = pending()
    new, out = decide.expire(p, now=p.deadline + offset, hsm=world.platform)
    assert (new.state == "timed_out") is expired and bool(out.events) is expired
    if expired:
        codes = [getattr(ev, "response_code", None) for _r, _k, ev in out.events]
        assert ISSUER_UNAVAILABLE in codes
        (rev,) = reversals(out)
        assert (rev.reason, rev.occurred_at) == ("timeout", p.deadline)


def test_an_answered_payment_past_its_deadline_is_not_reversed(world: World) -> None:
    p = pending(state="answered", approved=True)
    new, out = decide.expire(p, now=p.deadline + timedelta(hours=1), hsm=world.platform)
    assert new == p and out.events == []
