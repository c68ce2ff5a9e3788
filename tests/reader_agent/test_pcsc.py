"""Real pcscd + vpcd + virtual cards: the dialogue over pyscard, and an independent client."""

from __future__ import annotations

import shutil
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardbus.crypto import emv, transit
from cardbus.errors import CardAuthenticationError, CardError
from cards import applet_for
from cards.hostile import HostileApplet
from reader_agent.dialogue import (
    Checkout,
    complete_payment,
    credit_load,
    init_load,
    read_purse,
    run_payment,
)
from reader_agent.pcsc import CardLimits, Context, wait_present
from tests.reader_agent.conftest import aids, card_auth_public, imk, issue

pytestmark = pytest.mark.pcsc


def _pay(ctx: Context, reader: str, issuer_pub: bytes, amount: int = 1250):
    wait_present(ctx, reader)
    link = ctx.connect(reader)
    try:
        return link, run_payment(link, aids(), Checkout(amount=amount), lambda _p: issuer_pub)
    except BaseException:
        link.disconnect()
        raise


@pytest.mark.skipif(shutil.which("scriptor") is None, reason="pcsc-tools not installed")
def test_independent_pcsc_client_selects_payment_applet(pcscd, make_card, tmp_path: Path):
    profile, _card = make_card("bank-a", pcscd[0])
    script = tmp_path / "select.txt"
    script.write_text("reset\n00 A4 04 00 0E " + b"2PAY.SYS.DDF01".hex(" ").upper() + " 00\n"
                      f"00 A4 04 00 {len(profile.aid) // 2:02X} "
                      + bytes.fromhex(profile.aid).hex(" ").upper() + " 00\n")
    wait_present(Context(), pcscd[0].name)
    out = subprocess.run(["scriptor", "-r", pcscd[0].name, str(script)], capture_output=True,
                         text=True, timeout=20).stdout
    answers = [line for line in out.splitlines() if line.startswith("<")]
    assert len(answers) >= 2, out
    assert "90 00 : Normal processing" in out
    # The AID answer carries the AID (tag 84) and the PDOL (9F 38).
    flat = out.replace("\n", " ")
    assert bytes.fromhex(profile.aid).hex(" ").upper() in flat
    assert "9F 38" in flat


@pytest.mark.parametrize("provider", ["bank-a", "bank-b"])
def test_tap_payment_card_arqc_and_card_auth_verify(pcscd, make_card, issuers, provider):
    profile, _card = make_card(provider, pcscd[1])
    ctx = Context()
    issuer = issuers[provider]
    link, tap = _pay(ctx, pcscd[1].name, card_auth_public(issuer), amount=4321)
    try:
        assert tap.provider == provider and tap.aid == profile.aid
        assert tap.pan == profile.pan and tap.masked_pan == profile.masked()
        assert tap.atc == 1 and tap.cid == 0x80
        assert tap.pan_token == profile.pan_token
        today = datetime.now(UTC).strftime("%y%m%d")
        # What the provider recomputes from the request fields alone.
        data = emv.arqc_data(amount=4321, currency_code=156, country_code=156, date=today,
                             unpredictable_number=tap.unpredictable_number, atc=tap.atc,
                             aip=tap.aip)
        assert data == tap.arqc_data
        sk = emv.verify_card_arqc(imk(issuer), tap.pan, tap.psn, tap.atc,
                                  data, tap.arqc)
        done = complete_payment(link, tap, b"00", emv.generate_arpc_method1(sk, tap.arqc, b"00"))
        assert done.cid == 0x40 and done.issuer_authenticated
    finally:
        link.disconnect()
    link2, tap2 = _pay(ctx, pcscd[1].name, card_auth_public(issuer))
    link2.disconnect()
    assert tap2.atc == 2 and tap2.arqc != tap.arqc


def test_wrong_arpc_gives_aac(pcscd, make_card, issuers):
    make_card("bank-a", pcscd[1])
    link, tap = _pay(Context(), pcscd[1].name, card_auth_public(issuers["bank-a"]))
    try:
        done = complete_payment(link, tap, b"00", bytes(8))
    finally:
        link.disconnect()
    assert done.cid == 0x00 and not done.issuer_authenticated


def test_card_from_unknown_issuer_fails_card_authentication(pcscd, make_card, issuers):
    make_card("bank-a", pcscd[1])
    with pytest.raises(CardAuthenticationError):
        _pay(Context(), pcscd[1].name, card_auth_public(issuers["bank-b"]))


def test_transit_load_over_pcsc_persists_balance(pcscd, make_card, issuers, card_home):
    profile, card = make_card("transit", pcscd[2], balance=500)
    ctx = Context()
    wait_present(ctx, pcscd[2].name)
    link = ctx.connect(pcscd[2].name)
    purse = read_purse(link, profile.aid)
    assert purse.balance == 500 and purse.card_number == profile.pan
    assert purse.card_token == profile.pan_token and purse.card_token.startswith("tok_")
    init = init_load(link, 2000, "T-0001")
    dlk = bytes.fromhex(profile.load_key)
    transit.verify_card_mac1(dlk, init.random, init.online_seq, 500, 2000, "T-0001", init.mac1)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    when = transit.card_time(at)
    assert when == "20260102030405"
    mac2 = transit.operator_mac2(dlk, init.random, init.online_seq, 2000, "T-0001", when)
    tac = credit_load(link, at, mac2)
    transit.verify_card_tac(bytes.fromhex(profile.tac_key), 2500, init.online_seq, 2000,
                            "T-0001", when, tac)
    link.disconnect()
    # Take the card out and tap it again: a new applet from the same state file.
    card.remove()
    wait_present(ctx, pcscd[2].name, present=False)
    card.applet = applet_for(profile, card_home)
    card.insert()
    wait_present(ctx, pcscd[2].name)
    link = ctx.connect(pcscd[2].name)
    assert read_purse(link, profile.aid).balance == 2500
    with pytest.raises(CardError, match="9302"):
        init2 = init_load(link, 100, "T-0001")
        credit_load(link, at, bytes(4))
    assert init2.balance == 2500
    assert read_purse(link, profile.aid).balance == 2500
    link.disconnect()


def test_two_readers_two_cards_at_once(pcscd, make_card, issuers):
    pa, _ = make_card("bank-a", pcscd[0])
    pb, _ = make_card("bank-b", pcscd[3])
    results: dict[str, object] = {}

    def tap(reader: str, provider: str) -> None:
        ctx = Context()
        for _ in range(5):
            link, t = _pay(ctx, reader, card_auth_public(issuers[provider]))
            link.disconnect()
            results[reader] = t

    threads = [threading.Thread(target=tap, args=(pcscd[0].name, "bank-a")),
               threading.Thread(target=tap, args=(pcscd[3].name, "bank-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    a, b = results[pcscd[0].name], results[pcscd[3].name]
    assert a.pan == pa.pan and a.atc == 5  # type: ignore[attr-defined]
    assert b.pan == pb.pan and b.atc == 5  # type: ignore[attr-defined]


def test_card_removed_mid_dialogue(pcscd, make_card, issuers, card_home):
    profile = issue("bank-a", issuers["bank-a"])
    inner = applet_for(profile, card_home)
    make_card("bank-a", pcscd[0], applet=HostileApplet("vanish", inner))
    ctx = Context()
    with pytest.raises(CardError, match=r"generate AC|removed"):
        _pay(ctx, pcscd[0].name, card_auth_public(issuers["bank-a"]))


@pytest.mark.parametrize(("mode", "message"), [
    ("garbage", "malformed|lacks|no supported"),
    ("error", "status 6F00"),
    ("no_aid", "no supported application"),
    ("more_data", r"^select PPSE: card still announced more data \(61xx\) after 32 GET "
                  "RESPONSE commands$"),
    ("wrong_length", r"^select PPSE: card still asked for another length \(6Cxx\) after 1 "
                     "re-issue$"),
    ("huge", r"^select PPSE: card sent more than the 32768 bytes a card step may receive$"),
    ("nested", r"^select PPSE: malformed answer \(TLV nested more than 8 deep\)$"),
])
def test_hostile_card_gives_clear_card_error(pcscd, make_card, issuers, mode, message):
    card = HostileApplet(mode)
    make_card("bank-a", pcscd[2], applet=card)
    with pytest.raises(CardError, match=message):
        _pay(Context(), pcscd[2].name, card_auth_public(issuers["bank-a"]))
    if mode == "more_data":  # the SELECT, then exactly the bounded GET RESPONSE rounds
        assert card.commands == 1 + 32
    if mode == "wrong_length":  # the SELECT and one re-issue with the card's Le
        assert card.commands == 2


def test_card_step_deadline_refuses_a_card_too_slow_to_finish(pcscd, make_card, issuers,
                                                             card_home):
    """Each answer comes (0.2 s apiece), but the dialogue's eight commands outlast a 0.5 s
    step deadline: refused between two commands, naming the deadline."""
    inner = applet_for(issue("bank-a", issuers["bank-a"]), card_home)
    card = HostileApplet("slow", inner, delay=0.2)
    make_card("bank-a", pcscd[3], applet=card)
    ctx = Context()
    wait_present(ctx, pcscd[3].name)
    link = ctx.connect(pcscd[3].name, CardLimits(deadline_s=0.5))
    try:
        with pytest.raises(CardError, match=r"card took longer than the 0.5 s a card step may "
                                            "take$"):
            run_payment(link, aids(), Checkout(amount=100),
                        lambda _p: card_auth_public(issuers["bank-a"]))
    finally:
        link.disconnect()
    assert 1 <= card.commands < 8  # stopped part way, not at the end
