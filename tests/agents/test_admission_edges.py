"""Admission at its edges: each refusal names the provider and every AID it concerns, a range
of a longer prefix is inside (or overlaps) a shorter one only where its card numbers really
fall, a range must lie wholly inside an admitted one, and a registration again keeps the route's
keys-ready flag."""

from __future__ import annotations

import pytest

from agents.platform import admission, decide
from agents.providers.announce import registration
from agents.providers.bank_a import adapter as bank_a
from bench.sim import World
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from schemas.values import BinRange
from tests.agents.conftest import NOW
from tests.agents.test_trust_platform import admitted, rogue


def _others(world: World) -> dict[str, decide.Route]:
    return {k: v for k, v in world.routes.items() if k != "bank-a"}


def test_no_admission_names_the_registration(world: World) -> None:
    reg = registration(bank_a, world.providers["bank-a"], NOW)
    with pytest.raises(decide.Rejected) as exc:
        admission.check_admitted(reg, None)
    assert str(exc.value) == "registration of bank-a: no operator admission for this provider"


def test_every_aid_not_admitted_is_named(world: World) -> None:
    hsm = world.providers["bank-a"]
    adm = admitted(world, hsm)
    reg = registration(bank_a, hsm, NOW)
    more = hsm.sign_event(reg.model_copy(update={"payment_aids": (
        "A000000333010101", "A0000009991010", "A0000009992020")}))
    with pytest.raises(decide.Rejected) as exc:
        admission.check_admitted(more, adm)
    assert str(exc.value) == ("registration of bank-a: AIDs A0000009991010, A0000009992020 "
                              "are not admitted")


def test_a_range_partly_outside_the_admitted_one_is_refused(world: World) -> None:
    hsm = world.providers["bank-a"]
    adm = admitted(world, hsm, ranges=(BinRange(low="622202", high="622205"),))
    reg = registration(bank_a, hsm, NOW)
    for low, high in (("622201", "622202"), ("622205", "622206")):
        partly = hsm.sign_event(reg.model_copy(update={"bin_ranges": (
            BinRange(low=low, high=high),)}))
        with pytest.raises(decide.Rejected) as exc:
            admission.check_admitted(partly, adm)
        assert str(exc.value) == f"registration of bank-a: BIN range {low}-{high} is not admitted"


@pytest.mark.parametrize(("inner", "inside"), [
    (("62220200", "62220299"), True),   # the whole 6-digit range, as 8-digit prefixes
    (("62220300", "62220300"), False),  # the first 8-digit prefix past it
    (("62220199", "62220199"), False),  # the last one before it
])
def test_a_longer_prefix_is_inside_a_6_digit_range_only_where_it_falls(
        world: World, inner: tuple[str, str], inside: bool) -> None:
    hsm = world.providers["bank-a"]
    adm = admitted(world, hsm)  # 622202-622202
    reg = registration(bank_a, hsm, NOW)
    ev = hsm.sign_event(reg.model_copy(update={"bin_ranges": (
        BinRange(low=inner[0], high=inner[1]),)}))
    if inside:
        admission.check_admitted(ev, adm)
    else:
        with pytest.raises(decide.Rejected, match="is not admitted"):
            admission.check_admitted(ev, adm)
    six, eight = BinRange(low="622202", high="622202"), BinRange(low=inner[0], high=inner[1])
    assert admission.overlap(six, eight) is inside and admission.overlap(eight, six) is inside


def test_overlap_refusals_name_both_providers_and_every_shared_aid(world: World) -> None:
    hsm = ProviderHsm("rogue", memory_keystore())
    reg = rogue(hsm, (BinRange(low="4761", high="4761"),))
    with pytest.raises(decide.Rejected) as ranges:
        admission.check_no_overlap(reg, world.routes)
    bank_b = world.routes["bank-b"].bin_ranges[0]
    assert str(ranges.value) == (f"rogue: BIN range 4761-4761 overlaps bank-b's "
                                 f"{bank_b.low}-{bank_b.high}")
    adm_b = admitted(world, world.providers["bank-b"], provider_id="bank-b",
                     ranges=(BinRange(low="476173", high="476179"),),
                     aids=("A0000000031010", "A0000000032010"))
    claim = admitted(world, hsm, provider_id="rogue",
                     ranges=(BinRange(low="47617900", high="47617999"),), aids=("A0000009991010",))
    with pytest.raises(decide.Rejected) as admitted_range:
        admission.admit_provider(claim, {"bank-b": adm_b}, world.platform.verifier)
    assert str(admitted_range.value) == \
        "rogue: BIN range 47617900-47617999 overlaps bank-b's 476173-476179"
    both = admitted(world, hsm, provider_id="rogue", ranges=(BinRange(low="999990",
                                                                      high="999999"),),
                    aids=("A0000000032010", "A0000000031010"))
    with pytest.raises(decide.Rejected) as aids:
        admission.admit_provider(both, {"bank-b": adm_b}, world.platform.verifier)
    assert str(aids.value) == "rogue: AIDs A0000000031010, A0000000032010 are bank-b's too"


def test_registering_again_keeps_the_route_s_keys_ready(world: World) -> None:
    hsm = world.providers["bank-a"]
    adm = admission.admit_provider(admitted(world, hsm), {}, world.platform.verifier)
    reg = registration(bank_a, hsm, NOW)
    first = admission.register_admitted(reg, None, admission=adm, routes=_others(world))
    assert first.keys_ready is False
    ready = first.model_copy(update={"keys_ready": True})
    again = admission.register_admitted(reg, ready, admission=adm, routes=_others(world))
    assert again.keys_ready is True
