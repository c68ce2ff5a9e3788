"""Issue 22, findings 5 and 7 at the platform: clock ticks sealed by the platform and bounded by
the broker's time; providers routed only when an operator admitted them, never two providers
for one card, never a route without keys; new terminals suspended until an operator acts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.platform import admission, decide
from agents.providers.announce import registration
from agents.providers.bank_a import adapter as bank_a
from agents.providers.bank_b import adapter as bank_b
from bench.sim import World
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keystore import b64e, memory_keystore
from cardbus.crypto.signing import Signer, Verifier
from cardbus.response_codes import NO_ROUTE, SUSPENDED_TERMINAL
from reader_agent.terminal import enrollment
from schemas.base import header
from schemas.clock import ClockTicked
from schemas.providers import ProviderAdmitted, ProviderRegistered
from schemas.terminals import TerminalStatusChanged
from schemas.values import BinRange, Merchant
from tests.agents.conftest import NOW

T = "T-0001"


# -- finding 5: ticks -----------------------------------------------------------------------

def tick(at=NOW, seal: Signer | None = None):  # type: ignore[no-untyped-def]
    ev = ClockTicked(**header("platform", "clock-0", at), partition=0)
    return ev if seal is None else ev.model_copy(update={"seal": seal.seal(ev.canonical_bytes())})


def test_a_tick_sealed_by_the_platform_gives_now(world: World) -> None:
    ev = world.platform.sign_event(tick())
    assert decide.accept_tick(ev, broker_time=NOW, platform=world.platform.verifier) == NOW


def test_an_unsealed_or_forged_tick_is_refused(world: World) -> None:
    """The finding: a tick dated 2099 on the topic terminals write timed out (91) and reversed
    every pending payment of its partition."""
    with pytest.raises(decide.Rejected, match="carries no seal"):
        decide.accept_tick(tick(NOW.replace(year=2099)), broker_time=NOW,
                           platform=world.platform.verifier)
    forged = tick(seal=Signer.generate(world.platform.verifier.key_id))
    with pytest.raises(decide.Rejected, match="does not verify"):
        decide.accept_tick(forged, broker_time=NOW, platform=world.platform.verifier)


@pytest.mark.parametrize(("ahead", "ok"), [(timedelta(seconds=5), True),
                                           (timedelta(seconds=5, microseconds=1), False),
                                           (timedelta(days=-1), True)])
def test_a_tick_at_most_5_seconds_ahead_of_the_broker(world: World, ahead: timedelta,
                                                      ok: bool) -> None:
    assert timedelta(seconds=5) == decide.TICK_MAX_AHEAD
    ev = world.platform.sign_event(tick(NOW + ahead))
    if ok:
        decide.accept_tick(ev, broker_time=NOW, platform=world.platform.verifier)
    else:
        with pytest.raises(decide.Rejected, match="ahead of the broker"):
            decide.accept_tick(ev, broker_time=NOW, platform=world.platform.verifier)


# -- finding 7: admission -------------------------------------------------------------------

def admitted(world: World, hsm: ProviderHsm, *, provider_id: str = "bank-a",
             ranges: tuple[BinRange, ...] = (BinRange(low="622202", high="622202"),),
             operator: Signer | None = None, aids: tuple[str, ...] = ("A000000333010101",)
             ) -> ProviderAdmitted:
    ev = ProviderAdmitted(
        **header("cli", provider_id, NOW), provider_id=provider_id, kind="bank",
        identity_key_id=hsm.verifier.key_id, identity_public_key=b64e(hsm.verifier.public_bytes()),
        bin_ranges=ranges, payment_aids=aids, reason="contract")
    if operator is None:
        return world.platform.sign_event(ev)
    return ev.model_copy(update={"seal": operator.seal(ev.canonical_bytes())})


def rogue(hsm: ProviderHsm, ranges: tuple[BinRange, ...]) -> ProviderRegistered:
    reg = registration(bank_b, hsm, NOW)
    return hsm.sign_event(reg.model_copy(update={"provider_id": "rogue", "bin_ranges": ranges,
                                                 "payment_aids": ("A0000009991010",)}))


def test_an_unadmitted_provider_is_not_routed(world: World) -> None:
    """The finding: a rogue provider registering BIN 000000-999999 made every bank-b card
    decline 92. Its own proof of possession is not an admission."""
    hsm = ProviderHsm("rogue", memory_keystore())
    reg = rogue(hsm, (BinRange(low="000000", high="999999"),))
    decide.register_provider(reg, None)  # proof of possession alone: accepted (TOFU)
    with pytest.raises(decide.Rejected, match="no operator admission"):
        admission.register_admitted(reg, None, admission=None, routes=world.routes)


def test_an_admission_not_sealed_by_the_operator_is_refused(world: World) -> None:
    hsm = ProviderHsm("bank-x", memory_keystore())
    forged = admitted(world, hsm, provider_id="bank-x",
                      ranges=(BinRange(low="999990", high="999999"),),
                      operator=Signer.generate(world.platform.verifier.key_id))
    with pytest.raises(decide.Rejected, match="does not verify"):
        admission.admit_provider(forged, {}, world.platform.verifier)


def test_admitted_registration_is_routed_and_must_match_it(world: World) -> None:
    hsm = world.providers["bank-a"]
    adm = admission.admit_provider(admitted(world, hsm), {}, world.platform.verifier)
    reg = registration(bank_a, hsm, NOW)
    others = {k: v for k, v in world.routes.items() if k != "bank-a"}
    route = admission.register_admitted(reg, None, admission=adm, routes=others)
    assert route.provider_id == "bank-a"
    wider = hsm.sign_event(reg.model_copy(update={"bin_ranges": (
        BinRange(low="622200", high="622209"),)}))
    with pytest.raises(decide.Rejected, match="622200-622209 is not admitted"):
        admission.register_admitted(wider, None, admission=adm, routes=others)
    other_key = ProviderHsm("bank-a", memory_keystore())
    with pytest.raises(decide.Rejected, match="identity key is not the admitted one"):
        admission.register_admitted(registration(bank_a, other_key, NOW), None, admission=adm,
                                    routes=others)
    more_aids = hsm.sign_event(reg.model_copy(update={"payment_aids": ("A000000333010101",
                                                                       "A0000009991010")}))
    with pytest.raises(decide.Rejected, match="A0000009991010 are not admitted"):
        admission.register_admitted(more_aids, None, admission=adm, routes=others)


def test_overlapping_bin_ranges_are_refused(world: World) -> None:
    hsm = ProviderHsm("rogue", memory_keystore())
    reg = rogue(hsm, (BinRange(low="4761", high="4761"),))  # covers bank-b's 476173-476179
    with pytest.raises(decide.Rejected, match="overlaps bank-b"):
        admission.check_no_overlap(reg, world.routes)
    adm_b = admitted(world, world.providers["bank-b"], provider_id="bank-b",
                     ranges=(BinRange(low="476173", high="476179"),), aids=("A0000000031010",))
    claim = admitted(world, hsm, provider_id="rogue", ranges=(BinRange(low="47617900",
                                                                       high="47617999"),),
                     aids=("A0000009991010",))
    with pytest.raises(decide.Rejected, match="overlaps bank-b"):
        admission.admit_provider(claim, {"bank-b": adm_b}, world.platform.verifier)
    same_aid = admitted(world, hsm, provider_id="rogue", ranges=(BinRange(low="999990",
                                                                          high="999999"),),
                        aids=("A0000000031010",))
    with pytest.raises(decide.Rejected, match="bank-b's too"):
        admission.admit_provider(same_aid, {"bank-b": adm_b}, world.platform.verifier)
    fine = admitted(world, hsm, provider_id="rogue", ranges=(BinRange(low="476180",
                                                                      high="476189"),),
                    aids=("A0000009991010",))
    assert admission.admit_provider(fine, {"bank-b": adm_b}, world.platform.verifier) == fine


@pytest.mark.parametrize(("a", "b", "expected"), [
    (("476173", "476179"), ("476179", "476190"), True),
    (("476173", "476179"), ("476180", "476190"), False),
    (("4761", "4761"), ("476173", "476179"), True),
    (("4762", "4769"), ("476173", "476179"), False),
    (("47617", "47617"), ("476179", "476179"), True),
])
def test_overlap_of_ranges_of_any_length(a: tuple[str, str], b: tuple[str, str],
                                         expected: bool) -> None:
    ra, rb = BinRange(low=a[0], high=a[1]), BinRange(low=b[0], high=b[1])
    assert admission.overlap(ra, rb) is expected and admission.overlap(rb, ra) is expected


def test_a_route_without_keys_is_skipped(world: World) -> None:
    """bank-b's route without its keys: its cards get NO_ROUTE; never another provider."""
    routes = {**world.routes, "bank-b": world.routes["bank-b"].model_copy(
        update={"keys_ready": False})}
    assert decide.route_card(routes, "A0000000031010", "476173") is None
    assert decide.route_card(world.routes, "A0000000031010", "476173") == world.routes["bank-b"]
    card = world.issue("bank-b")
    req = world.pay(T, card, amount=100, when=NOW)
    pending, out = decide.request_payment(req, received_at=NOW,
                                          terminal=world.terminal_records[T], routes=routes,
                                          hsm=world.platform)
    ((_, _, done),) = out.events
    assert pending is None and done.response_code == NO_ROUTE  # type: ignore[attr-defined]


def test_a_new_terminal_starts_suspended_until_the_operator_activates_it(world: World) -> None:
    term = world.add_terminal("T-0002", NOW)
    merchant = Merchant(merchant_id="M-0001", name="Shop", mcc="5999")
    record, _keys = decide.enroll_terminal(enrollment(term, merchant, NOW), None,
                                           world.platform, world.routes,
                                           initial_status="suspended")
    assert record.status == "suspended"
    card = world.issue("bank-a")
    req = world.pay("T-0002", card, amount=100, when=NOW)
    _, out = decide.request_payment(req, received_at=NOW, terminal=record, routes=world.routes,
                                    hsm=world.platform)
    assert out.events[0][2].response_code == SUSPENDED_TERMINAL  # type: ignore[attr-defined]
    act = TerminalStatusChanged(**header("cli", "T-0002", NOW), terminal_id="T-0002",
                                status="active", reason="operator checked the merchant")
    unsigned = act
    with pytest.raises(decide.Rejected):
        decide.change_status(unsigned, record, world.platform.verifier)
    active = decide.change_status(world.platform.sign_event(act), record,
                                  world.platform.verifier)
    assert active.status == "active"
    assert isinstance(world.platform.verifier, Verifier)
