"""The manager's state machine on its own terms: what it sends in which batches, and how it
ends when the relay or the card misbehaves. The card on the other side is the in-process
multi-application card."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.providers.base import adapter_for
from cardbus.crypto import scp03
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keystore import memory_keystore
from cardbus.errors import SecureChannelError
from cardbus.gp import commands, session
from cardbus.gp.card import ISD_AID, TRANSIT_LOAD_FILE, Sw
from cards import applet_for
from reader_agent.dialogue import AppletLink

PURSE = bytes.fromhex("A000000632010105")
HC = bytes.fromhex("0102030405060708")


@pytest.fixture
def bank() -> ProviderHsm:
    return ProviderHsm("bank-a", memory_keystore())


@pytest.fixture
def link(bank: ProviderHsm, tmp_path: Path) -> AppletLink:
    profile = adapter_for("bank-a").issue_card(bank, pin="1234", opening_balance=0).profile
    return AppletLink(applet_for(profile, tmp_path))


def _install_and_list() -> session.Script:
    perso = session.PursePersonalisation("3100001111222233", "tok_purse", os.urandom(16),
                                         os.urandom(16))
    return session.Script((session.InstallApp(TRANSIT_LOAD_FILE, PURSE, perso),
                           session.ListContent()))


def test_start_selects_the_isd_and_initializes(bank: ProviderHsm) -> None:
    state, steps = session.start(_install_and_list(), HC)
    assert [s.apdu for s in steps] == [commands.select(ISD_AID), commands.initialize_update(HC)]
    assert steps[0].expect == (Sw.OK, Sw.SELECTED_INVALIDATED) and not state.done


def test_batches_end_at_each_get_status(bank: ProviderHsm, link: AppletLink) -> None:
    state, steps = session.start(_install_and_list(), HC)
    batches = []
    while not state.done:
        batches.append([s.label for s in steps])
        state, steps = session.advance(state, session.relay(link.transmit, steps),
                                       bank.isd_card_keys)
    assert state.outcome is not None and state.outcome.ok
    install = "install A000000632010105"
    assert batches == [
        ["select ISD", "initialize update"],
        ["external authenticate", install, f"install for personalization {PURSE.hex().upper()}",
         f"store data {PURSE.hex().upper()} block 0",
         f"store data {PURSE.hex().upper()} block 1", "get status 80"],
        ["get status 40"], ["get status 10"]]
    assert session.advance(state, [(b"", 0x9000)], bank.isd_card_keys) == (state, [])


def test_commands_leave_protected_and_keys_leave_encrypted(bank: ProviderHsm,
                                                           link: AppletLink) -> None:
    script = _install_and_list()
    perso = script.operations[0].personalisation  # type: ignore[union-attr]
    state, steps = session.start(script, HC)
    state, steps = session.advance(state, session.relay(link.transmit, steps),
                                   bank.isd_card_keys)
    wire = b"".join(s.apdu for s in steps)
    assert all(s.apdu[0] == 0x84 for s in steps)  # every command carries its C-MAC
    assert perso.load_key not in wire and perso.tac_key not in wire
    assert b"3100001111222233" not in wire  # level 33: C-DECRYPTION hides the data too


def test_a_relay_that_stops_early_or_answers_too_much_ends_the_session(
        bank: ProviderHsm, link: AppletLink) -> None:
    state, steps = session.start(_install_and_list(), HC)
    done, _ = session.advance(state, [link.transmit(steps[0].apdu)], bank.isd_card_keys)
    assert done.outcome is not None and done.outcome.failed_step == "initialize update"
    assert "stopped" in done.outcome.reason
    done, _ = session.advance(state, [(b"", 0x9000)] * 3, bank.isd_card_keys)
    assert done.outcome is not None and not done.outcome.ok
    done, _ = session.advance(state, [(b"", 0x6A82)], bank.isd_card_keys)
    assert done.outcome is not None and (done.outcome.failed_step, done.outcome.sw) == \
        ("select ISD", 0x6A82)


def test_level_the_card_does_not_offer_is_refused(bank: ProviderHsm, link: AppletLink) -> None:
    state, steps = session.start(_install_and_list(), HC)
    (sel, (data, sw)) = session.relay(link.transmit, steps)
    no_rmac = data[:12] + bytes([scp03.I_PSEUDO_RANDOM]) + data[13:]  # "i" = 10
    done, _ = session.advance(state, [sel, (no_rmac, sw)], bank.isd_card_keys)
    assert done.outcome is not None and "does not offer" in done.outcome.reason


def test_bad_inputs_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(SecureChannelError):
        session.start(_install_and_list(), b"short")
    with pytest.raises(SecureChannelError):
        session.start(session.Script((session.ListContent(),), level=0x00), HC)
