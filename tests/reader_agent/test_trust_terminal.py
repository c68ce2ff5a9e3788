"""Issue 22, finding 3: terminals fail closed. No platform key, no terminal; a key set or a
result not sealed by the platform is never acted on (logged and set aside). No broker."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from agents.platform import decide as platform
from agents.providers.bank_a import adapter as bank_a
from bench.sim import World, directory_entry
from cardbus import vault
from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.keystore import memory_keystore
from cardbus.crypto.signing import Signer, seal_event
from cardbus.errors import ConfigError, MissingKeyError, SignatureInvalid
from reader_agent import session
from reader_agent.terminal import Terminal, enrollment
from schemas.base import Money
from streams.codec import encode
from tests.agents.conftest import NOW


@pytest.fixture
def world() -> World:
    return World.build([bank_a], [], NOW)


def enrolled(world: World, tid: str = "T-0009") -> tuple[Terminal, platform.TerminalRecord]:
    term = Terminal.in_memory(tid, memory_keystore(), platform=world.platform.verifier)
    record, keys = platform.enroll_terminal(enrollment(term.hsm, term.merchant, NOW), None,
                                            world.platform, world.routes)
    term.apply_keys(keys)
    return term, record


def test_no_platform_key_no_terminal(tmp_path: Path) -> None:
    """Before: ``directory.json`` missing -> a terminal made anyway, with every seal check off."""
    with pytest.raises(ConfigError, match="no platform public key"):
        Terminal.create("T-0001", home=tmp_path)
    assert not (tmp_path / "parties").exists() or not any((tmp_path / "parties").iterdir())


def test_a_terminal_needs_the_platform_verifier() -> None:
    with pytest.raises(TypeError):
        Terminal.in_memory("T-0001", memory_keystore())  # type: ignore[call-arg]


def test_create_with_the_platform_key_in_the_directory(tmp_path: Path) -> None:
    hsm = PlatformHsm(memory_keystore())
    vault.publish_identity("platform", hsm.verifier, tmp_path)
    term = Terminal.create("T-0001", home=tmp_path)
    assert term.platform.public_bytes() == hsm.verifier.public_bytes()


@pytest.mark.parametrize("seal", ["none", "attacker"])
def test_a_key_set_not_sealed_by_the_platform_is_never_installed(world: World,
                                                                  seal: str) -> None:
    """An attacker wraps its own PIN key to the terminal's X25519 key (anonymous ECDH) and
    vouches for its own card-authentication key: nothing of it is installed or trusted."""
    term = Terminal.in_memory("T-0007", memory_keystore(), platform=world.platform.verifier)
    attacker = PlatformHsm(memory_keystore())  # a platform of the attacker's own
    _record, keys = platform.enroll_terminal(enrollment(term.hsm, term.merchant, NOW), None,
                                            attacker, {})
    rogue = keys.model_copy(update={"card_auth_keys": (directory_entry(
        bank_a, world.providers["bank-a"]).model_copy(update={"provider_id": "bank-x"}),)})
    forged = (rogue.model_copy(update={"seal": None}) if seal == "none"
              else seal_event(rogue, Signer.generate(world.platform.verifier.key_id)))
    with pytest.raises(SignatureInvalid):
        term.apply_keys(forged)
    with pytest.raises(MissingKeyError):
        term.hsm.keys.latest_version("tpk:T-0007")
    assert term.card_auth == {} and not term.ready


def test_the_platform_s_key_set_is_installed(world: World) -> None:
    term, _ = enrolled(world)
    assert term.ready and set(term.card_auth) == {"bank-a"}


def _completed(world: World, tid: str, hsm: PlatformHsm) -> bytes:
    ev = platform.complete("req-00000001", "pay-1", tid, "622202******1234",
                           Money(amount=100, currency="CNY"), "00", occurred_at=NOW, hsm=hsm,
                           provider_id="bank-a", auth_code="ABC123")
    return encode(ev)


def test_a_forged_payment_result_is_ignored_and_logged(world: World,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    term, _ = enrolled(world)
    forger = PlatformHsm(memory_keystore())
    with capture_logs() as logs:
        monkeypatch.setattr(session, "log", structlog.get_logger())  # not a cached one
        assert session.accept_result(term, _completed(world, term.terminal_id, forger), offset=7) is None
    assert [e["event"] for e in logs] == ["result set aside"] and logs[0]["offset"] == 7


def test_a_result_for_another_terminal_is_ignored(world: World) -> None:
    term, _ = enrolled(world)
    with capture_logs():
        assert session.accept_result(term, _completed(world, "T-OTHER", world.platform)) is None


def test_the_platform_s_result_is_accepted(world: World) -> None:
    term, _ = enrolled(world)
    ev = session.accept_result(term, _completed(world, term.terminal_id, world.platform))
    assert ev is not None and ev.correlation_id == "pay-1"


def test_reprs_never_show_a_pan_or_card_keys() -> None:
    from cardbus.cardprofile import CardProfile

    profile = CardProfile(card_id="c1", provider="bank-a", kind="emv", aid="A0000003330101",
                          label="X", pan="4111111111111111", expiry="301231",
                          icc_master_key="AB" * 16, card_private_key="CD" * 32,
                          load_key="EF" * 16, tac_key="12" * 16)
    text = repr(profile)
    for secret in ("4111111111111111", "AB" * 16, "CD" * 32, "EF" * 16, "12" * 16):
        assert secret not in text


def test_an_unknown_currency_is_refused_by_the_terminal() -> None:
    from reader_agent.agent import ReaderAgent

    agent = ReaderAgent.__new__(ReaderAgent)
    agent.armed = None
    with pytest.raises(ConfigError, match="XTS"):
        agent.arm(100, "XTS")
    assert agent.armed is None
