"""Lost and stolen cards on the card side: the EMV application takes APPLICATION BLOCK /
UNBLOCK issuer scripts built by the issuer's HSM, refuses tampered or replayed ones ('6988',
counted), and a blocked application answers SELECT with '6283' and GENERATE AC with an AAC.
Run on the multi-application bank card and on a plain single-application EMV card."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardbus.cardprofile import CardProfile
from cardbus.emv.data import CDOL1_LEN, CID_AAC, CID_ARQC, PDOL
from cardbus.emv.tlv import find
from cards import applet_for
from cards.applet import BaseApplet
from cards.emv_applet import EmvApplet
from cards.profile import CardState
from reader_agent.dialogue import AppletLink, Checkout, apdu, run_payment
from tests.reader_agent.conftest import aids, card_auth_public, issue, pan_blob


def _applet(profile: CardProfile, home: Path, multi: bool) -> BaseApplet:
    if multi:
        return applet_for(profile, home)
    return EmvApplet(profile, CardState.for_profile(profile, home))  # a single-app card


def _first_ac(link: AppletLink, aid: str) -> tuple[int, int, bytes, int]:
    """SELECT, GPO, GENERATE AC without the terminal's checks: (select SW, CID, AC, ATC)."""
    _, select_sw = link.transmit(apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(aid)))
    pdol_len = sum(n for _, n in PDOL)
    _, sw = link.transmit(apdu(0x80, 0xA8, 0x00, 0x00, bytes([0x83, pdol_len]) + bytes(pdol_len)))
    assert sw == 0x9000
    data, sw = link.transmit(apdu(0x80, 0xAE, CID_ARQC, 0x00, bytes(CDOL1_LEN)))
    assert sw == 0x9000
    tags = find(data)
    return select_sw, tags["9F27"][0], tags["9F26"], int.from_bytes(tags["9F36"], "big")


@pytest.fixture(params=[True, False], ids=["multi-app", "single-app"])
def multi(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_block_then_unblock(issuers, card_home: Path, multi: bool) -> None:
    bank = issuers["bank-a"]
    profile = issue("bank-a", bank)
    link = AppletLink(_applet(profile, card_home, multi))
    tap = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
    blob = pan_blob(bank, profile.pan, "pay-1")
    block = bank.issuer_script(blob, "pay-1", tap.psn, tap.atc, tap.arqc, block=True)
    assert block[:5] == bytes.fromhex("841E000008")
    assert link.transmit(block)[1] == 0x9000

    link = AppletLink(_applet(profile, card_home, multi))  # the next tap
    select_sw, cid, _aac, _atc = _first_ac(link, profile.aid)
    assert (select_sw, cid) == (0x6283, CID_AAC)
    # the terminal's dialogue goes on through a blocked application ('6283') as a zero-amount
    # check whose AAC goes online, so the issuer's UNBLOCK can reach the card
    link = AppletLink(_applet(profile, card_home, multi))
    check = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
    assert check.blocked and check.declined_by_card and check.cid == CID_AAC
    assert check.cdol1_data[:6] == bytes(6)  # the amount the cryptogram covers: zero
    unblock = bank.issuer_script(blob, "pay-1", tap.psn, check.atc, check.arqc, block=False)
    assert link.transmit(unblock)[1] == 0x9000
    atc = check.atc

    link = AppletLink(_applet(profile, card_home, multi))
    tap = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
    assert tap.cid == CID_ARQC and tap.atc == atc + 1


def test_tampered_replayed_or_early_scripts_are_refused(issuers, card_home: Path,
                                                        multi: bool) -> None:
    bank = issuers["bank-a"]
    profile = issue("bank-a", bank)
    blob = pan_blob(bank, profile.pan, "c")
    link = AppletLink(_applet(profile, card_home, multi))
    tap = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
    block = bank.issuer_script(blob, "c", tap.psn, tap.atc, tap.arqc, block=True)
    tampered = block[:-1] + bytes([block[-1] ^ 0x01])
    assert link.transmit(tampered)[1] == 0x6988
    assert link.transmit(bytes([0x84, 0x18]) + block[2:])[1] == 0x6988  # INS swapped

    link = AppletLink(_applet(profile, card_home, multi))  # the next tap
    assert link.transmit(block)[1] == 0x6985  # no transaction yet: nothing to bind to
    tap2 = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
    assert link.transmit(block)[1] == 0x6988  # the last transaction's script, replayed
    state = CardState.for_profile(profile, card_home)
    assert state["script_failures"] == 3 and state["blocked"] == 0
    other = issuers["bank-b"]  # another issuer's keys cannot block this card
    forged = other.issuer_script(pan_blob(other, profile.pan, "c"), "c", tap2.psn, tap2.atc,
                                 tap2.arqc, block=True)
    assert link.transmit(forged)[1] == 0x6988
