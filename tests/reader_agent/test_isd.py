"""The multi-application bank card and its issuer security domain, driven in process (no PC/SC):
the manager's state machine (``cardbus.gp.session``) against the card (``MultiAppCard``), and
raw APDUs for what a well-behaved manager never sends."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardbus.cardprofile import CardProfile
from cardbus.crypto import scp03
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.transit import card_time
from cardbus.gp import commands, session
from cardbus.gp.card import (
    EMV_LOAD_FILE,
    ISD_AID,
    STATUS_ISD,
    STATUS_LOAD_FILES_MODULES,
    TRANSIT_LOAD_FILE,
    AppLife,
    CardLife,
    Sw,
)
from cards import applet_for
from cards.content import CardContent
from cards.isd import AUTH_LIMIT
from cards.multiapp import MultiAppCard
from reader_agent.dialogue import (
    AppletLink,
    Checkout,
    credit_load,
    init_load,
    read_purse,
    run_payment,
)
from tests.reader_agent.conftest import aids, card_auth_public, issue

PURSE = bytes.fromhex("A000000632010105")
PURSE_NO = "3100009876543210"
H = bytes.fromhex


class Card:
    """A bank card in a field: its applet, a link, and the manager's view of it."""

    def __init__(self, profile: CardProfile, home: Path, bank: ProviderHsm) -> None:
        self.profile, self.home, self.bank = profile, home, bank
        self.tap()

    def tap(self) -> None:
        """Take the card out and put it back: a fresh applet over the same files."""
        applet = applet_for(self.profile, self.home)
        assert isinstance(applet, MultiAppCard)
        self.applet = applet
        self.link = AppletLink(applet)

    def send(self, apdu: bytes) -> tuple[bytes, int]:
        return self.link.transmit(apdu)

    def run(self, *ops: session.Operation, level: int = 0x33,
            tamper: Callable[[list[tuple[bytes, int]]], list[tuple[bytes, int]]] | None = None
            ) -> session.Outcome:
        def relay(steps: list[session.Step]) -> list[tuple[bytes, int]]:
            out = session.relay(self.send, steps)
            return tamper(out) if tamper else out

        return session.run(session.Script(ops, level), os.urandom(8), relay,
                           self.bank.isd_card_keys)

    def content(self) -> CardContent:
        return CardContent.for_profile(self.profile, self.home)


@pytest.fixture
def card(issuers: dict[str, ProviderHsm], card_home: Path) -> Card:
    return Card(issue("bank-a", issuers["bank-a"], balance=100_000), card_home,
                issuers["bank-a"])


def _purse_install(issuers: dict[str, ProviderHsm]) -> session.InstallApp:
    token = issuers["transit"].transit_card_token(PURSE_NO)
    dlk, dtk = issuers["transit"].transit_card_keys(token)
    return session.InstallApp(TRANSIT_LOAD_FILE, PURSE,
                              session.PursePersonalisation(PURSE_NO, token, dlk, dtk))


def _load(link: AppletLink, op: ProviderHsm, amount: int,
          when: datetime = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)) -> int:
    """A load through the transit dialogue code, the operator's HSM answering MAC2."""
    purse = read_purse(link, PURSE.hex().upper())
    init = init_load(link, amount, "T-0001")
    mac2 = op.authorize_load(purse.card_token, init.random, init.online_seq, init.balance,
                             amount, "T-0001", card_time(when), init.mac1)
    tac = credit_load(link, when, mac2)
    op.verify_load_tac(purse.card_token, init.balance + amount, init.online_seq, amount,
                       "T-0001", card_time(when), tac)
    return init.balance + amount


@pytest.mark.parametrize("level", [0x01, 0x03, 0x11, 0x13, 0x33])
def test_install_personalise_list_and_load_a_purse(card: Card, issuers, level: int) -> None:
    outcome = card.run(_purse_install(issuers), session.ListContent(), level=level)
    assert outcome.ok, outcome.reason
    apps = {e.aid: e for e in outcome.applications}
    assert set(apps) == {PURSE, H(card.profile.aid)}
    assert apps[PURSE].life == AppLife.PERSONALIZED
    assert apps[PURSE].load_file == TRANSIT_LOAD_FILE.aid
    assert outcome.card_life == CardLife.SECURED
    assert outcome.entries(STATUS_ISD)[0].aid == ISD_AID
    modules = {e.aid: e.modules for e in outcome.entries(STATUS_LOAD_FILES_MODULES)}
    assert modules == {EMV_LOAD_FILE.aid: (EMV_LOAD_FILE.module,),
                       TRANSIT_LOAD_FILE.aid: (TRANSIT_LOAD_FILE.module,)}
    assert _load(card.link, issuers["transit"], 2_000) == 2_000
    card.tap()  # the purse, its keys and its balance survive the card leaving the field
    assert _load(card.link, issuers["transit"], 500, datetime(2026, 12, 1, 10, 16, tzinfo=UTC)) == 2_500


def test_payment_app_still_pays_and_ppse_lists_only_payment_apps(card: Card, issuers) -> None:
    assert card.run(_purse_install(issuers)).ok
    tap = run_payment(card.link, aids(), Checkout(amount=700),
                      lambda _p: card_auth_public(issuers["bank-a"]))
    assert tap.aid == card.profile.aid and tap.atc == 1
    ppse, sw = card.send(commands.apdu(0x00, 0xA4, 0x04, 0x00, b"2PAY.SYS.DDF01", 0))
    assert sw == 0x9000 and H(card.profile.aid) in ppse and PURSE not in ppse


def test_lock_unlock_and_delete_an_application(card: Card, issuers) -> None:
    assert card.run(_purse_install(issuers)).ok
    locked = card.run(session.LockApp(PURSE), session.ListContent())
    assert locked.ok and {e.aid: e.locked for e in locked.applications}[PURSE]
    assert card.send(commands.select(PURSE))[1] == Sw.NOT_FOUND
    assert card.run(session.LockApp(PURSE, lock=False)).ok
    assert card.send(commands.select(PURSE))[1] == Sw.OK
    gone = card.run(session.DeleteApp(PURSE), session.ListContent())
    assert gone.ok and PURSE not in {e.aid for e in gone.applications}
    assert card.send(commands.select(PURSE))[1] == Sw.NOT_FOUND
    again = card.run(session.DeleteApp(PURSE))
    assert not again.ok and again.sw == Sw.REFERENCED_DATA_NOT_FOUND


def test_locking_the_payment_app_takes_it_out_of_ppse(card: Card) -> None:
    assert card.run(session.LockApp(H(card.profile.aid))).ok
    assert card.send(commands.apdu(0x00, 0xA4, 0x04, 0x00, b"2PAY.SYS.DDF01", 0))[1] == \
        Sw.NOT_FOUND


def test_lock_the_card_then_unlock_it(card: Card, issuers) -> None:
    assert card.run(_purse_install(issuers), session.LockCard()).ok
    for aid in (H(card.profile.aid), PURSE, b"2PAY.SYS.DDF01"):
        assert card.send(commands.select(aid))[1] == Sw.NOT_FOUND
    assert card.send(commands.select(ISD_AID))[1] == Sw.SELECTED_INVALIDATED
    card.tap()
    assert card.run(session.ListContent()).card_life == CardLife.CARD_LOCKED
    refused = card.run(_purse_install(issuers))  # no content change on a locked card
    assert refused.sw == Sw.CONDITIONS_NOT_SATISFIED
    assert card.run(session.LockCard(lock=False)).ok
    assert card.send(commands.select(PURSE))[1] == Sw.OK


def test_get_status_answer_continues_when_it_does_not_fit(card: Card, issuers) -> None:
    card.applet.isd.status_chunk = 40  # one entry per answer
    outcome = card.run(_purse_install(issuers), session.ListContent())
    assert outcome.ok and len(outcome.applications) == 2
    assert len(outcome.entries(STATUS_LOAD_FILES_MODULES)) == 2


# -- refusals ---------------------------------------------------------------------------

def _open(card: Card, level: int = 0x11) -> tuple[scp03.Channel, bytes]:
    """A secure channel opened by hand: the channel and the INITIALIZE UPDATE answer."""
    hc = os.urandom(8)
    card.send(commands.select(ISD_AID))
    data, sw = card.send(commands.initialize_update(hc))
    assert sw == Sw.OK
    iu = commands.InitUpdateResponse.parse(data)
    sk = scp03.session_keys(card.bank.isd_card_keys(iu.kdd), hc, iu.card_challenge)
    ch, auth = scp03.wrap_command(
        scp03.begin(sk, level),
        commands.external_authenticate(level, scp03.host_cryptogram(sk, hc, iu.card_challenge)),
        encrypt=False)
    assert card.send(auth)[1] == Sw.OK
    return ch, data


def _bad_authentication(card: Card) -> int:
    """INITIALIZE UPDATE, then EXTERNAL AUTHENTICATE under keys that are not the card's."""
    card.send(commands.select(ISD_AID))
    assert card.send(commands.initialize_update(os.urandom(8)))[1] == Sw.OK
    _, auth = scp03.wrap_command(scp03.begin(scp03.SessionKeys(*[bytes(16)] * 3), 0x01),
                                 commands.external_authenticate(0x01, bytes(8)), encrypt=False)
    return card.send(auth)[1]


def test_wrong_host_cryptogram_is_counted_and_blocks_after_the_limit(card: Card) -> None:
    for attempt in range(1, AUTH_LIMIT + 1):
        if attempt == 3:
            card.tap()  # the count survives the card leaving the field
        assert _bad_authentication(card) == Sw.AUTHENTICATION_FAILED
        assert card.content().doc.auth_failures == attempt
    card.send(commands.select(ISD_AID))
    assert card.send(commands.initialize_update(os.urandom(8)))[1] == Sw.AUTH_METHOD_BLOCKED
    blocked = card.run(session.ListContent())  # the right keys no longer help
    assert not blocked.ok and blocked.sw == Sw.AUTH_METHOD_BLOCKED


def test_a_good_authentication_resets_the_consecutive_count(card: Card) -> None:
    assert _bad_authentication(card) == Sw.AUTHENTICATION_FAILED
    assert card.run(session.ListContent()).ok
    doc = card.content().doc
    assert (doc.auth_failures, doc.auth_failures_total) == (0, 1)


def test_out_of_order_and_unprotected_commands_are_refused(card: Card) -> None:
    card.send(commands.select(ISD_AID))
    auth = commands.external_authenticate(0x01, bytes(16))
    assert card.send(auth)[1] == Sw.CONDITIONS_NOT_SATISFIED  # no INITIALIZE UPDATE before
    assert card.send(commands.get_status(STATUS_ISD))[1] == Sw.SECURITY_NOT_SATISFIED
    ch, _ = _open(card)
    # inside the channel, a command without its C-MAC aborts the session
    assert card.send(commands.get_status(STATUS_ISD))[1] == Sw.SECURITY_NOT_SATISFIED
    _, wrapped = scp03.wrap_command(ch, commands.get_status(STATUS_ISD))
    assert card.send(wrapped)[1] == Sw.SECURITY_NOT_SATISFIED  # aborted: even a good one


def test_replayed_and_tampered_commands_are_refused_and_counted(card: Card, issuers) -> None:
    ch, _ = _open(card)
    ch1, install = scp03.wrap_command(ch, commands.install(
        TRANSIT_LOAD_FILE.aid, TRANSIT_LOAD_FILE.module, PURSE))
    data, sw = card.send(install)
    assert sw == Sw.OK and scp03.unwrap_response(ch1, data, sw) == b"\x00"
    assert card.send(install)[1] == Sw.SECURITY_NOT_SATISFIED  # replayed
    assert card.content().doc.mac_failures == 1
    ch, _ = _open(card)
    _, status = scp03.wrap_command(ch, commands.get_status(STATUS_ISD))
    tampered = bytearray(status)
    tampered[2] = 0x40  # the applications instead of the ISD
    assert card.send(bytes(tampered))[1] == Sw.SECURITY_NOT_SATISFIED
    ch, _ = _open(card)
    ch, _first = scp03.wrap_command(ch, commands.get_status(STATUS_ISD))
    _, second = scp03.wrap_command(ch, commands.get_status(STATUS_ISD))
    assert card.send(second)[1] == Sw.SECURITY_NOT_SATISFIED  # the first one never came
    assert card.content().doc.mac_failures == 3


def test_manager_rejects_a_tampered_response(card: Card, issuers) -> None:
    calls = []

    def flip_status_data(out: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        calls.append(out)
        data, sw = out[-1]
        if len(calls) == 2:  # the batch after INITIALIZE UPDATE ends with GET STATUS
            out[-1] = (bytes([data[0] ^ 0x01]) + data[1:], sw)
        return out

    outcome = card.run(session.ListContent(), tamper=flip_status_data)
    assert not outcome.ok and "R-MAC" in outcome.reason
    assert outcome.failed_step == "get status 80"


def test_manager_rejects_a_replayed_initialize_update_answer(card: Card) -> None:
    _, old_answer = _open(card)
    calls = []

    def replay_old(out: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        calls.append(out)
        return [out[0], (old_answer, Sw.OK)] if len(calls) == 1 else out

    outcome = card.run(session.ListContent(), tamper=replay_old)
    assert not outcome.ok and "card cryptogram" in outcome.reason


def test_manager_rejects_another_issuers_card(card: Card, issuers) -> None:
    outcome = session.run(session.Script((session.ListContent(),)), os.urandom(8),
                          lambda steps: session.relay(card.send, steps),
                          issuers["bank-b"].isd_card_keys)
    assert not outcome.ok and outcome.failed_step == "initialize update"


@pytest.mark.parametrize(("ops", "sw"), [
    ((session.InstallApp(TRANSIT_LOAD_FILE, H("A0000006320101FF")),
      session.InstallApp(TRANSIT_LOAD_FILE, H("A0000006320101FF"))), Sw.WRONG_DATA),
    ((session.InstallApp(EMV_LOAD_FILE, ISD_AID),), Sw.WRONG_DATA),
    ((session.DeleteApp(ISD_AID),), Sw.CONDITIONS_NOT_SATISFIED),
    ((session.DeleteApp(TRANSIT_LOAD_FILE.aid),
      session.InstallApp(TRANSIT_LOAD_FILE, PURSE)), Sw.REFERENCED_DATA_NOT_FOUND),
    ((session.LockApp(H("A0000000999999")),), Sw.REFERENCED_DATA_NOT_FOUND),
    ((session.LockCard(lock=False),), Sw.CONDITIONS_NOT_SATISFIED),
])
def test_content_management_refusals(card: Card, ops: tuple[session.Operation, ...],
                                     sw: int) -> None:
    outcome = card.run(*ops)
    assert not outcome.ok and outcome.sw == sw, outcome.reason


def test_store_data_out_of_order_or_unannounced_is_refused(card: Card, issuers) -> None:
    assert card.run(session.InstallApp(TRANSIT_LOAD_FILE, PURSE)).ok
    ch, _ = _open(card, 0x13)
    token = issuers["transit"].transit_card_token(PURSE_NO)
    dlk, dtk = issuers["transit"].transit_card_keys(token)
    dek = card.bank.isd_card_keys(H(card.profile.isd_kdd)).dek
    blocks = commands.purse_personalisation(dek, PURSE_NO, token, dlk, dtk)
    ch, cmd = scp03.wrap_command(ch, blocks[1])
    assert card.send(cmd)[1] == Sw.CONDITIONS_NOT_SATISFIED  # no INSTALL [for perso] first
    ch, cmd = scp03.wrap_command(ch, commands.install_for_personalization(PURSE))
    assert card.send(cmd)[1] == Sw.OK
    ch, cmd = scp03.wrap_command(ch, blocks[1])
    assert card.send(cmd)[1] == Sw.WRONG_P1P2  # block 1 before block 0
    assert card.send(commands.select(PURSE))[1] == Sw.CONDITIONS_NOT_SATISFIED  # not perso'd


def test_sequence_counter_and_challenges_never_repeat(card: Card) -> None:
    answers = {_open(card)[1] for _ in range(3)}
    card.tap()
    answers.add(_open(card)[1])
    assert len({commands.InitUpdateResponse.parse(a).card_challenge for a in answers}) == 4
    assert card.content().doc.sequence_counter == 4
