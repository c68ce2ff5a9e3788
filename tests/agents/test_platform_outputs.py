"""The platform's outputs field by field, with literal values: the ids the audit re-derives
(sha256 of "platform:<kind>:<source event id>", 32 hex digits), what an answer to a terminal
carries, and what a forwarded request keeps of the terminal's."""

from __future__ import annotations

import hashlib

from agents.platform import decide as platform
from agents.providers.issuer import HsmIssuer
from agents.providers.state import ChainHead, OpenBatch
from bench.sim import World
from cardbus.response_codes import APPROVED, MESSAGES
from schemas.payments import AuthorizationRequested, PaymentCompleted, ReversalRequested
from tests.agents.conftest import NOW
from tests.agents.test_platform_decide import request, run


def pid(kind: str, source: str) -> str:
    return hashlib.sha256(f"platform:{kind}:{source}".encode()).hexdigest()[:32]


def test_derived_ids_are_32_hex_digits_of_the_documented_hash() -> None:
    assert platform.derived_id("auth", "e-1") == pid("auth", "e-1")
    assert len(platform.derived_id("auth", "e-1")) == 32


def test_the_forwarded_request_keeps_the_payment_s_purpose_and_has_a_derived_id(
        world: World) -> None:
    _, req = request(world, "bank-a", purpose="transit_load")
    pending, out = run(world, req)
    ((_, _, auth),) = out.events
    assert isinstance(auth, AuthorizationRequested)
    assert auth.event_id == pid("auth", req.event_id)
    assert auth.purpose == "transit_load" and auth.request_event_id == req.event_id
    assert pending is not None and pending.auth_event_id == auth.event_id


def test_an_approval_reaches_the_terminal_with_every_field(world: World) -> None:
    card, req = request(world, "bank-a")
    pending, out = run(world, req)
    ((_, _, auth),) = out.events
    issuer = HsmIssuer(world.providers["bank-a"], world.platform.verifier)
    decided = world.adapters["bank-a"].authorize(
        auth, card=card.card, account=card.account, chain=ChainHead(), batch=OpenBatch(),  # type: ignore[arg-type]
        processed=None, crypto=issuer).decision
    assert decided.approved and decided.auth_code
    _, out = platform.take_decision(decided, pending=pending, route=world.routes["bank-a"],
                                    hsm=world.platform)
    ((role, key, done),) = out.events
    assert (role, key) == ("terminal", "T-0001")
    assert isinstance(done, PaymentCompleted)
    assert done.event_id == pid("complete", req.event_id)
    assert (done.provider_id, done.auth_code, done.arpc) == ("bank-a", decided.auth_code,
                                                             decided.arpc)
    assert (done.response_code, done.approved, done.message) == (
        APPROVED, True, MESSAGES[APPROVED])
    assert done.correlation_id == req.correlation_id and done.amount == req.amount


def test_a_timeout_reversal_has_the_derived_id_of_its_reason(world: World) -> None:
    _, req = request(world, "bank-a")
    pending, _ = run(world, req)
    assert pending is not None
    rev = platform.reversal(pending, "timeout", at=NOW, hsm=world.platform)
    assert isinstance(rev, ReversalRequested)
    assert rev.event_id == pid("reversal:timeout", pending.auth_event_id)
    assert (rev.reason, rev.original_event_id) == ("timeout", pending.auth_event_id)
