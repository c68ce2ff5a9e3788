"""The trusted platform's pure decisions: routing, terminal checks, timeouts, late approvals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import decide as platform
from agents.providers.announce import registration
from agents.providers.bank_a import adapter as bank_a
from agents.providers.base import ProviderAdapter
from agents.providers.issuer import HsmIssuer
from agents.providers.state import ChainHead, OpenBatch
from bench.sim import World
from cardbus.crypto.signing import Signer
from cardbus.response_codes import ISSUER_UNAVAILABLE, NO_ROUTE, SUSPENDED_TERMINAL
from reader_agent.terminal import enrollment
from schemas.payments import AuthorizationRequested, PaymentCompleted, ReversalRequested
from schemas.values import BinRange, Merchant
from tests.agents.conftest import NOW


def request(world: World, provider: str = "bank-a", **kw):  # type: ignore[no-untyped-def]
    card = world.issue(provider)
    return card, world.pay("T-0001", card, amount=kw.pop("amount", 1500), when=NOW, **kw)


def run(world: World, req, terminal=None):  # type: ignore[no-untyped-def]
    return platform.request_payment(
        req, received_at=NOW, terminal=terminal or world.terminal_records["T-0001"],
        routes=world.routes, hsm=world.platform)


@pytest.mark.parametrize("provider", ["bank-a", "bank-b"])
def test_routes_by_bin_with_pin_and_pan_translated(world: World, provider: str) -> None:
    _, req = request(world, provider)
    pending, out = run(world, req)
    ((role, key, auth),) = out.events
    assert role == f"provider:{provider}" and key == req.card.pan_token
    assert isinstance(auth, AuthorizationRequested) and pending is not None
    assert auth.pin_key_id is not None and auth.pin_key_id.startswith(f"pin:{provider}.v")
    assert auth.card.pan_encrypted.key_id.startswith(f"pan:{provider}.v")
    assert auth.pin_block != req.pin_block
    world.platform.verifier.verify_seal(auth.seal, auth.canonical_bytes())  # type: ignore[arg-type]
    # the provider can use what the platform translated
    hsm = world.providers[provider]
    assert hsm.verify_pin(auth.pin_key_id, bytes.fromhex(auth.pin_block or ""),
                          auth.card.pan_encrypted, auth.correlation_id,
                          _pvv(world, provider, auth))


def _pvv(world: World, provider: str, auth: AuthorizationRequested) -> str:
    # re-derive the card's PVV from its PIN "1234" the way issuance did
    from cardbus.crypto import pin as pinlib
    from cardbus.crypto.keys import KeyUsage

    hsm = world.providers[provider]
    pan = hsm._pan(auth.card.pan_encrypted, auth.correlation_id)
    return pinlib.visa_pvv(hsm.keys.key(f"pvk:{provider}", KeyUsage.PIN_VERIFY), "1", "1234", pan)


def test_suspended_terminal_is_declined_without_routing(world: World) -> None:
    _, req = request(world)
    suspended = world.terminal_records["T-0001"].model_copy(update={"status": "suspended"})
    pending, out = run(world, req, terminal=suspended)
    ((role, key, done),) = out.events
    assert pending is None and role == "terminal" and key == "T-0001"
    assert isinstance(done, PaymentCompleted) and done.response_code == SUSPENDED_TERMINAL


def test_forged_terminal_mac_is_rejected(world: World) -> None:
    _, req = request(world)
    tampered = req.model_copy(update={"amount": req.amount.model_copy(update={"amount": 1})})
    with pytest.raises(platform.Rejected, match="terminal MAC"):
        run(world, tampered)


def test_unknown_terminal_is_rejected(world: World) -> None:
    _, req = request(world)
    with pytest.raises(platform.Rejected, match="unknown terminal"):
        platform.request_payment(req, received_at=NOW, terminal=None, routes=world.routes,
                                 hsm=world.platform)


def test_no_route_is_declined(world: World) -> None:
    _, req = request(world)
    routes = {k: v for k, v in world.routes.items() if k != "bank-a"}
    _, out = platform.request_payment(req, received_at=NOW,
                                      terminal=world.terminal_records["T-0001"], routes=routes,
                                      hsm=world.platform)
    ((_, _, done),) = out.events
    assert done.response_code == NO_ROUTE  # type: ignore[attr-defined]


def test_timeout_declines_and_reverses_then_late_approval_is_reversed(world: World) -> None:
    card, req = request(world)
    pending, out = run(world, req)
    assert pending is not None
    ((_, _, auth),) = out.events
    same, nothing = platform.expire(pending, now=NOW + timedelta(seconds=1), hsm=world.platform)
    assert same == pending and nothing.events == []
    timed_out, out = platform.expire(pending, now=NOW + timedelta(seconds=4), hsm=world.platform)
    assert timed_out.state == "timed_out"
    (to_terminal, to_provider) = out.events
    assert to_terminal[2].response_code == ISSUER_UNAVAILABLE  # type: ignore[attr-defined]
    assert isinstance(to_provider[2], ReversalRequested)
    assert to_provider[2].reason == "timeout"
    # the provider answers late, approving
    issuer = HsmIssuer(world.providers["bank-a"], world.platform.verifier)
    decided = bank_a.authorize(auth, card=card.card, account=card.account,  # type: ignore[arg-type]
                               chain=ChainHead(), batch=OpenBatch(), processed=None,
                               crypto=issuer).decision
    assert decided.approved
    after, out = platform.take_decision(decided, pending=timed_out,
                                        route=world.routes["bank-a"], hsm=world.platform)
    ((role, _, late),) = out.events
    assert role == "provider:bank-a" and isinstance(late, ReversalRequested)
    assert late.reason == "late_approval" and after is not None and after.state == "answered"


def test_decision_forwarded_once(world: World) -> None:
    card, req = request(world)
    pending, out = run(world, req)
    ((_, _, auth),) = out.events
    issuer = HsmIssuer(world.providers["bank-a"], world.platform.verifier)
    decided = bank_a.authorize(auth, card=card.card, account=card.account,  # type: ignore[arg-type]
                               chain=ChainHead(), batch=OpenBatch(), processed=None,
                               crypto=issuer).decision
    answered, out = platform.take_decision(decided, pending=pending,
                                           route=world.routes["bank-a"], hsm=world.platform)
    ((role, key, done),) = out.events
    assert role == "terminal" and key == "T-0001" and done.approved  # type: ignore[attr-defined]
    _, again = platform.take_decision(decided, pending=answered, route=world.routes["bank-a"],
                                      hsm=world.platform)
    assert again.events == []


def test_decision_with_forged_provider_signature_is_rejected(world: World) -> None:
    card, req = request(world)
    pending, out = run(world, req)
    ((_, _, auth),) = out.events
    issuer = HsmIssuer(world.providers["bank-a"], world.platform.verifier)
    decided = bank_a.authorize(auth, card=card.card, account=card.account,  # type: ignore[arg-type]
                               chain=ChainHead(), batch=OpenBatch(), processed=None,
                               crypto=issuer).decision
    impostor = Signer.generate(decided.seal.key_id)  # type: ignore[union-attr]
    forged = decided.model_copy(update={"seal": impostor.seal(decided.canonical_bytes())})
    with pytest.raises(platform.Rejected, match="does not verify"):
        platform.take_decision(forged, pending=pending, route=world.routes["bank-a"],
                               hsm=world.platform)


def test_registration_needs_proof_of_possession_and_stable_identity(world: World) -> None:
    hsm = world.providers["bank-a"]
    reg = registration(bank_a, hsm, NOW)
    stranger = Signer.generate(reg.identity_key_id)
    forged = reg.model_copy(update={"seal": stranger.seal(reg.canonical_bytes())})
    with pytest.raises(platform.Rejected):
        platform.register_provider(forged, None)
    other = World.build([bank_a], [], NOW)  # same provider id, another identity key
    rival = registration(bank_a, other.providers["bank-a"], NOW)
    with pytest.raises(platform.Rejected, match="identity key changed"):
        platform.register_provider(rival, world.routes["bank-a"])


def test_new_provider_routes_without_restart(world: World) -> None:
    bank_c = ProviderAdapter(provider_id="bank-c", name="Bank C", kind="bank",
                             aid="A0000000041010", label="MC DEBIT", card_bin="535522",
                             bin_ranges=(BinRange(low="535522", high="535522"),))
    world.add_provider(bank_c, NOW)
    _, req = request(world, "bank-c")
    _, out = run(world, req)
    ((role, _, _),) = out.events
    assert role == "provider:bank-c"


def test_enrollment_is_idempotent_and_needs_possession(world: World) -> None:
    terminal = world.terminals["T-0001"]
    merchant = Merchant(merchant_id="M-0001", name="Shop", mcc="5999")
    ev = enrollment(terminal, merchant, NOW)
    record = world.terminal_records["T-0001"]
    again, keys = platform.enroll_terminal(ev, record, world.platform, world.routes)
    assert again.issued == record.issued
    assert {k.provider_id for k in keys.card_auth_keys} == {"bank-a", "bank-b"}
    forged = ev.model_copy(update={"seal": Signer.generate(ev.identity_key_id).seal(
        ev.canonical_bytes())})
    with pytest.raises(platform.Rejected):
        platform.enroll_terminal(forged, None, world.platform, world.routes)


def test_status_change_needs_the_operators_signature(world: World) -> None:
    from schemas.terminals import TerminalStatusChanged

    record = world.terminal_records["T-0001"]
    ev = TerminalStatusChanged(event_id="status-0001", correlation_id="T-0001", occurred_at=NOW,
                               producer="platform", terminal_id="T-0001", status="suspended",
                               reason="reported stolen")
    with pytest.raises(platform.Rejected):  # unsigned
        platform.change_status(ev, record, world.platform.verifier)
    forged = ev.model_copy(update={"seal": Signer.generate(
        world.platform.verifier.key_id).seal(ev.canonical_bytes())})
    with pytest.raises(platform.Rejected):
        platform.change_status(forged, record, world.platform.verifier)
    suspended = platform.change_status(world.platform.sign_event(ev), record,
                                       world.platform.verifier)
    assert suspended.status == "suspended"
