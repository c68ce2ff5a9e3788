"""Card management on the real pcscd: a bank card in a vpcd reader, driven through pyscard.
The manager (``cardbus.gp.session``, holding the issuer's keys) opens an SCP03 channel through
the reader, installs and personalises a transit purse next to the bank's payment application,
lists it, and the terminal's transit dialogue then loads it; lock, unlock, delete; replayed,
tampered and out-of-session commands are refused; an issuer script blocks the payment
application and another unblocks it. An independent PC/SC client (pcsc-tools' ``scriptor``)
opens the secure channel's first step too."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardbus.cardprofile import CardProfile
from cardbus.crypto import scp03
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.transit import card_time
from cardbus.emv.data import CDOL1_LEN, CID_AAC, PDOL
from cardbus.emv.tlv import find
from cardbus.errors import CardError
from cardbus.gp import commands, session
from cardbus.gp.card import ISD_AID, TRANSIT_LOAD_FILE, AppLife, Sw
from cardbus.readers import VirtualReader
from cards import applet_for
from cards.content import CardContent
from cards.vpcd import VirtualCard
from reader_agent.dialogue import Checkout, apdu, credit_load, init_load, read_purse, run_payment
from reader_agent.pcsc import CardLink, Context, wait_present
from tests.reader_agent.conftest import aids, card_auth_public, pan_blob

pytestmark = pytest.mark.pcsc

PURSE = bytes.fromhex("A000000632010105")
PURSE_NO = "3100004444555566"


def _connect(ctx: Context, reader: VirtualReader) -> CardLink:
    wait_present(ctx, reader.name)
    return ctx.connect(reader.name)


def _reinsert(ctx: Context, reader: VirtualReader, card: VirtualCard, profile: CardProfile,
              home: Path) -> CardLink:
    """Take the card out and tap it again: a new applet from the same files."""
    card.remove()
    wait_present(ctx, reader.name, present=False)
    card.applet = applet_for(profile, home)
    card.insert()
    return _connect(ctx, reader)


def _manage(link: CardLink, bank: ProviderHsm, *ops: session.Operation,
            level: int = 0x33) -> session.Outcome:
    return session.run(session.Script(ops, level), os.urandom(8),
                       lambda steps: session.relay(link.transmit, steps), bank.isd_card_keys)


def _install(issuers: dict[str, ProviderHsm]) -> session.InstallApp:
    token = issuers["transit"].transit_card_token(PURSE_NO)
    dlk, dtk = issuers["transit"].transit_card_keys(token)
    return session.InstallApp(TRANSIT_LOAD_FILE, PURSE,
                              session.PursePersonalisation(PURSE_NO, token, dlk, dtk))


def _load(link: CardLink, op: ProviderHsm, amount: int, when: datetime) -> int:
    purse = read_purse(link, PURSE.hex().upper())
    init = init_load(link, amount, "T-0001")
    mac2 = op.authorize_load(purse.card_token, init.random, init.online_seq, init.balance,
                             amount, "T-0001", card_time(when), init.mac1)
    tac = credit_load(link, when, mac2)
    op.verify_load_tac(purse.card_token, init.balance + amount, init.online_seq, amount,
                       "T-0001", card_time(when), tac)
    return init.balance + amount


def test_install_transit_purse_on_bank_card_list_and_load(pcscd, make_card, issuers,
                                                          card_home: Path) -> None:
    profile, card = make_card("bank-a", pcscd[0])
    bank, ctx = issuers["bank-a"], Context()
    link = _connect(ctx, pcscd[0])
    try:
        outcome = _manage(link, bank, _install(issuers), session.ListContent())
        assert outcome.ok, outcome.reason
        apps = {e.aid: e.life for e in outcome.applications}
        assert apps == {bytes.fromhex(profile.aid): AppLife.PERSONALIZED,
                        PURSE: AppLife.PERSONALIZED}
        purse = read_purse(link, PURSE.hex().upper())
        assert (purse.card_number, purse.balance) == (PURSE_NO, 0)
        assert _load(link, issuers["transit"], 2_000, datetime(2026, 12, 1, 9, 0, tzinfo=UTC)) == 2_000
        tap = run_payment(link, aids(), Checkout(amount=1250),
                          lambda _p: card_auth_public(bank))  # the bank app still pays
        assert tap.aid == profile.aid and tap.atc == 1
    finally:
        link.disconnect()
    link = _reinsert(ctx, pcscd[0], card, profile, card_home)
    try:
        assert read_purse(link, PURSE.hex().upper()).balance == 2_000
        assert PURSE in {e.aid for e in _manage(link, bank, session.ListContent()).applications}
        assert _load(link, issuers["transit"], 300, datetime(2026, 12, 1, 9, 1, tzinfo=UTC)) == 2_300
    finally:
        link.disconnect()


def test_lock_unlock_delete_over_pcsc(pcscd, make_card, issuers) -> None:
    _profile, _card = make_card("bank-a", pcscd[0])
    bank, link = issuers["bank-a"], _connect(Context(), pcscd[0])
    try:
        assert _manage(link, bank, _install(issuers)).ok
        assert _manage(link, bank, session.LockApp(PURSE), level=0x01).ok
        assert link.transmit(commands.select(PURSE))[1] == Sw.NOT_FOUND
        with pytest.raises(CardError, match="6A82"):
            read_purse(link, PURSE.hex().upper())
        assert _manage(link, bank, session.LockApp(PURSE, lock=False), level=0x13).ok
        assert read_purse(link, PURSE.hex().upper()).balance == 0
        outcome = _manage(link, bank, session.DeleteApp(PURSE), session.ListContent())
        assert outcome.ok and PURSE not in {e.aid for e in outcome.applications}
        assert link.transmit(commands.select(PURSE))[1] == Sw.NOT_FOUND
    finally:
        link.disconnect()


def test_replayed_tampered_and_unprotected_commands_refused_over_pcsc(
        pcscd, make_card, issuers, card_home: Path) -> None:
    profile, _card = make_card("bank-a", pcscd[0])
    bank, link = issuers["bank-a"], _connect(Context(), pcscd[0])
    sent: list[list[session.Step]] = []

    def recording(steps: list[session.Step]) -> list[tuple[bytes, int]]:
        sent.append(steps)
        return session.relay(link.transmit, steps)

    try:
        assert session.run(session.Script((_install(issuers),)), os.urandom(8), recording,
                           bank.isd_card_keys).ok
        old_script = sent[1]  # EXTERNAL AUTHENTICATE, INSTALL, STORE DATA... of that session
        # A whole old script replayed into a new session: the old host cryptogram fails.
        state, steps = session.start(session.Script((session.DeleteApp(PURSE),)),
                                     os.urandom(8))
        state, _new = session.advance(state, session.relay(link.transmit, steps),
                                      bank.isd_card_keys)
        state, _ = session.advance(state, session.relay(link.transmit, old_script),
                                   bank.isd_card_keys)
        assert state.outcome is not None and state.outcome.sw == Sw.AUTHENTICATION_FAILED
        # One command tampered with on its way: refused, the session aborted.
        state, steps = session.start(session.Script((session.DeleteApp(PURSE),)),
                                     os.urandom(8))
        state, steps = session.advance(state, session.relay(link.transmit, steps),
                                       bank.isd_card_keys)
        assert link.transmit(steps[0].apdu)[1] == Sw.OK  # EXTERNAL AUTHENTICATE
        delete = bytearray(steps[1].apdu)
        delete[7] ^= 0x01  # one byte of the (encrypted) AID to delete
        assert link.transmit(bytes(delete))[1] == Sw.SECURITY_NOT_SATISFIED
        assert link.transmit(steps[1].apdu)[1] == Sw.SECURITY_NOT_SATISFIED  # aborted
        # Outside any session, content management is refused.
        assert link.transmit(commands.select(ISD_AID))[1] == Sw.OK
        assert link.transmit(commands.delete(PURSE))[1] == Sw.SECURITY_NOT_SATISFIED
        assert read_purse(link, PURSE.hex().upper()).card_number == PURSE_NO  # still there
    finally:
        link.disconnect()
    doc = CardContent.for_profile(profile, card_home).doc
    assert (doc.auth_failures_total, doc.mac_failures) == (1, 1)


def _first_ac(link: CardLink, aid: str) -> tuple[int, int, bytes, int]:
    _, select_sw = link.transmit(apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(aid)))
    n = sum(length for _, length in PDOL)
    assert link.transmit(apdu(0x80, 0xA8, 0x00, 0x00, bytes([0x83, n]) + bytes(n)))[1] == 0x9000
    data, sw = link.transmit(apdu(0x80, 0xAE, 0x80, 0x00, bytes(CDOL1_LEN)))
    assert sw == 0x9000
    tags = find(data)
    return select_sw, tags["9F27"][0], tags["9F26"], int.from_bytes(tags["9F36"], "big")


def test_issuer_script_blocks_then_unblocks_over_pcsc(pcscd, make_card, issuers,
                                                      card_home: Path) -> None:
    profile, card = make_card("bank-a", pcscd[1])
    bank, ctx = issuers["bank-a"], Context()
    blob = pan_blob(bank, profile.pan, "lost-card")
    link = _connect(ctx, pcscd[1])
    try:
        tap = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
        block = bank.issuer_script(blob, "lost-card", tap.psn, tap.atc, tap.arqc, block=True)
        assert link.transmit(block[:-1] + bytes([block[-1] ^ 0xFF]))[1] == 0x6988  # tampered
        assert link.transmit(block)[1] == 0x9000
    finally:
        link.disconnect()
    link = _reinsert(ctx, pcscd[1], card, profile, card_home)
    try:
        select_sw, cid, _aac, _atc = _first_ac(link, profile.aid)
        assert (select_sw, cid) == (0x6283, CID_AAC)
        # the terminal's dialogue goes on through the blocked application as a zero-amount
        # check whose AAC goes online, so the issuer's UNBLOCK can reach the card
        check = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
        assert check.blocked and check.declined_by_card and check.cid == CID_AAC
        assert check.cdol1_data[:6] == bytes(6)  # the amount the cryptogram covers: zero
        assert link.transmit(block)[1] == 0x6988  # last tap's script, replayed
        unblock = bank.issuer_script(blob, "lost-card", tap.psn, check.atc, check.arqc,
                                     block=False)
        assert link.transmit(unblock)[1] == 0x9000
        tap = run_payment(link, aids(), Checkout(amount=100), lambda _p: card_auth_public(bank))
        assert tap.cid == 0x80
    finally:
        link.disconnect()


@pytest.mark.skipif(shutil.which("scriptor") is None, reason="pcsc-tools not installed")
def test_independent_pcsc_client_gets_a_verifiable_initialize_update(
        pcscd, make_card, issuers, tmp_path: Path) -> None:
    profile, _card = make_card("bank-a", pcscd[2])
    host_challenge = bytes.fromhex("1122334455667788")
    script = tmp_path / "gp.txt"
    script.write_text("reset\n" + commands.select(ISD_AID).hex(" ").upper() + "\n"
                      + commands.initialize_update(host_challenge).hex(" ").upper() + "\n")
    wait_present(Context(), pcscd[2].name)
    out = subprocess.run(["scriptor", "-r", pcscd[2].name, str(script)], capture_output=True,
                         text=True, timeout=20).stdout
    answers, current = [], None  # scriptor wraps an answer over lines up to " : <meaning>"
    for line in out.splitlines():
        if line.startswith("<"):
            current, line = [], line[1:]
        if current is not None:
            hex_part, end, _meaning = line.partition(":")
            current += hex_part.split()
            if end:
                answers.append(current)
                current = None
    assert len(answers) >= 3, out  # ATR, SELECT, INITIALIZE UPDATE
    iu_answer = bytes.fromhex("".join(answers[-1]))
    assert iu_answer[-2:] == b"\x90\x00", out
    iu = commands.InitUpdateResponse.parse(iu_answer[:-2])
    assert iu.kdd.hex().upper() == profile.isd_kdd and (iu.scp, iu.i) == (0x03, 0x70)
    keys = issuers["bank-a"].isd_card_keys(iu.kdd)
    sk = scp03.session_keys(keys, host_challenge, iu.card_challenge)
    assert iu.sequence_counter is not None
    assert scp03.card_challenge(keys.enc, iu.sequence_counter, ISD_AID) == iu.card_challenge
    assert scp03.card_cryptogram(sk, host_challenge, iu.card_challenge) == iu.card_cryptogram
