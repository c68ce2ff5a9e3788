"""The applets without PC/SC (what a load generator drives): state machine and persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardbus.crypto import emv
from cardbus.emv.tlv import find, parse
from cardbus.errors import CardError
from cards import applet_for
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, apdu, run_payment
from tests.reader_agent.conftest import aids, card_auth_public, imk, issue


def test_commands_out_of_order_are_refused(issuers, card_home: Path) -> None:
    applet = applet_for(issue("bank-a", issuers["bank-a"]), card_home)
    applet.power_on()
    gpo = apdu(0x80, 0xA8, 0x00, 0x00, bytes.fromhex("8300"))
    assert applet.process(gpo)[-2:] == bytes.fromhex("6985")
    assert applet.process(apdu(0x80, 0xAE, 0x80, 0x00, bytes(29)))[-2:] == bytes.fromhex("6985")
    assert applet.process(apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A0000009")))[-2:] == \
        bytes.fromhex("6A82")
    assert applet.process(bytes.fromhex("00"))[-2:] == bytes.fromhex("6700")
    uid = applet.process(bytes.fromhex("FFCA000000"))
    assert uid[-2:] == bytes.fromhex("9000") and len(uid) == 9


def test_atc_persists_across_insertions_and_arqc_verifies(issuers, card_home: Path) -> None:
    profile = issue("bank-a", issuers["bank-a"])
    for expected_atc in (1, 2, 3):
        link = AppletLink(applet_for(profile, card_home))  # a fresh applet: a new insertion
        tap = run_payment(link, aids(), Checkout(amount=500),
                          lambda _p: card_auth_public(issuers["bank-a"]))
        assert tap.atc == expected_atc
        emv.verify_card_arqc(imk(issuers["bank-a"]), profile.pan, "00", tap.atc,
                             tap.arqc_data, tap.arqc)
    assert CardState.for_profile(profile, card_home)["atc"] == 3


def test_tlv_rejects_truncated_data() -> None:
    with pytest.raises(CardError):
        parse(bytes.fromhex("6F10840E"))
    assert find(bytes.fromhex("6F0584039F3601"))["84"] == bytes.fromhex("9F3601")
