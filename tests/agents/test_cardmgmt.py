"""The platform as card-application manager: issuer policy, and the issuer's security-domain
master reaching the platform as a TR-31 block so the platform runs the card's secure channel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.platform import cardmgmt
from bench.sim import World
from cardbus.crypto.keys import KeyUsage
from cardbus.errors import CardManagementRefused, KeyBlockHeaderMismatch
from cardbus.gp import session
from cardbus.gp.card import TRANSIT_LOAD_FILE
from cards import applet_for
from reader_agent.dialogue import AppletLink

PURSE = bytes.fromhex("A000000632010105")
PERSO = session.PursePersonalisation("3100001111222233", "tok_purse", bytes(16), bytes(16))
POLICY = cardmgmt.IssuerPolicy("bank-a", installable=frozenset({"transit"}),
                               protected=frozenset({bytes.fromhex("A000000333010101")}))


def test_allowed_install_gives_install_then_listing() -> None:
    script = cardmgmt.script_for(POLICY, (cardmgmt.InstallApp("transit", PERSO),))
    assert script.operations == (session.InstallApp(TRANSIT_LOAD_FILE, PURSE, PERSO),
                                 session.ListContent())


@pytest.mark.parametrize(("policy", "request_", "why"), [
    (cardmgmt.IssuerPolicy("bank-b"), cardmgmt.InstallApp("transit", PERSO),
     "does not allow installing transit"),
    (POLICY, cardmgmt.InstallApp("loyalty", PERSO), "no application 'loyalty'"),
    (POLICY, cardmgmt.LockApp(bytes.fromhex("A000000333010101")), "changing application"),
    (POLICY, cardmgmt.DeleteApp(bytes.fromhex("A000000333010101")), "changing application"),
    (POLICY, cardmgmt.LockCard(), "locking its cards"),
    (cardmgmt.IssuerPolicy("bank-a", may_delete_apps=False), cardmgmt.DeleteApp(PURSE),
     "deleting applications"),
    (cardmgmt.IssuerPolicy("bank-a", may_lock_apps=False), cardmgmt.LockApp(PURSE),
     "locking applications"),
])
def test_policy_refusals(policy: cardmgmt.IssuerPolicy, request_: cardmgmt.Request,
                         why: str) -> None:
    with pytest.raises(CardManagementRefused, match=why):
        cardmgmt.script_for(policy, (request_,))


def test_platform_manages_a_card_with_the_issuers_key_block(world: World,
                                                            tmp_path: Path) -> None:
    bank = world.providers["bank-a"]
    block = bank.export_key_block(KeyUsage.GP_ISD_MASTER)
    world.platform.accept_key_block("bank-a", KeyUsage.GP_ISD_MASTER, block)
    with pytest.raises(KeyBlockHeaderMismatch):  # a PIN key block is not an ISD master
        world.platform.accept_key_block("bank-a", KeyUsage.GP_ISD_MASTER,
                                        bank.export_key_block(KeyUsage.PIN_ENC))
    profile = world.adapters["bank-a"].issue_card(bank, pin="1234", opening_balance=0).profile
    link = AppletLink(applet_for(profile, tmp_path))
    dlk, dtk = os.urandom(16), os.urandom(16)  # the operator's purse keys (made up here)
    script = cardmgmt.script_for(POLICY, (cardmgmt.InstallApp(
        "transit", session.PursePersonalisation("3100001111222233", "tok_purse", dlk, dtk)),))
    outcome = session.run(script, os.urandom(8), lambda steps: session.relay(link.transmit, steps),
                          lambda kdd: world.platform.isd_card_keys("bank-a", kdd))
    assert outcome.ok, outcome.reason
    assert PURSE in {e.aid for e in outcome.applications}
    # another issuer's master (were the platform to pick the wrong one) opens nothing
    other = world.providers["bank-b"]
    world.platform.accept_key_block("bank-b", KeyUsage.GP_ISD_MASTER,
                                    other.export_key_block(KeyUsage.GP_ISD_MASTER))
    wrong = session.run(script, os.urandom(8), lambda steps: session.relay(link.transmit, steps),
                        lambda kdd: world.platform.isd_card_keys("bank-b", kdd))
    assert not wrong.ok and wrong.failed_step == "initialize update"
