"""``cardbus cards apps|install|lock|unlock|delete-app`` (card management through the platform,
the card in a reader of this terminal) and ``cardbus cards block|unblock`` (the issuer reports a
card lost or stolen, or lifts it). One line per result; exit codes from ``console.exitcodes``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from agents.platform.cardmgmt import CATALOGUE
from cardbus.cardprofile import CardProfile
from cardbus.errors import ConfigError
from cardbus.gp.card import AppLife, CardLife
from console import exitcodes
from schemas.base import header
from schemas.cardmgmt import CardManagementCompleted, CardOperation
from schemas.cardstatus import CardBlocked, CardUnblocked

_LIFE = {AppLife.INSTALLED: "INSTALLED", AppLife.SELECTABLE: "SELECTABLE",
         AppLife.PERSONALIZED: "PERSONALIZED", 0x01: "LOADED"}


def register_actions(csub: Any) -> None:
    """The card-management actions of ``cardbus cards``."""
    apps = csub.add_parser("apps", help="what is on a card (through the platform's secure "
                                        "channel, the card in a reader)")
    _card_args(apps)
    apps.set_defaults(func=_run, ops=lambda a: [CardOperation(action="list")])
    inst = csub.add_parser("install", help="install a catalogue application (transit) on a "
                                           "bank card, through the platform")
    inst.add_argument("--app", required=True, choices=sorted(CATALOGUE))
    inst.add_argument("--card", required=True, dest="card_id")
    _card_args(inst, positional=False)
    inst.set_defaults(func=_run, ops=lambda a: [CardOperation(action="install", app=a.app)])
    for action, verb in (("lock", "lock"), ("unlock", "unlock"), ("delete-app", "delete")):
        p = csub.add_parser(action, help=f"{verb} an application on a card, through the "
                                         "platform")
        _card_args(p)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--app", choices=sorted(CATALOGUE), help="a catalogue application")
        target.add_argument("--aid", help="an application instance AID (hex)")
        p.set_defaults(func=_run, ops=lambda a, verb=verb: [
            CardOperation(action=verb, aid=_aid(a))])
    blk = csub.add_parser("block", help="the issuer reports a card lost or stolen: declined "
                                        "(41/43), blocked on the card at its next tap")
    why = blk.add_mutually_exclusive_group(required=True)
    why.add_argument("--lost", action="store_const", const="lost", dest="reason")
    why.add_argument("--stolen", action="store_const", const="stolen", dest="reason")
    blk.add_argument("card_id")
    blk.add_argument("--bootstrap", default=None)
    blk.set_defaults(func=_block)
    unb = csub.add_parser("unblock", help="the issuer lifts a block: the card's next tap "
                                          "unblocks it")
    unb.add_argument("card_id")
    unb.add_argument("--bootstrap", default=None)
    unb.set_defaults(func=_block, reason=None)


def _card_args(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("card_id", help="the card (it must sit in --reader)")
    p.add_argument("--reader", type=int, default=0, help="virtual reader index (default 0)")
    p.add_argument("--issuer", default=None,
                   help="the card's issuer (default: the provider of the card's profile)")
    p.add_argument("--terminal-id", default=None)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--timeout", type=float, default=30.0)


def _aid(args: argparse.Namespace) -> str:
    if args.app is not None:
        return CATALOGUE[args.app].instance.hex().upper()
    aid = str(args.aid).upper()
    if len(aid) % 2 or not 10 <= len(aid) <= 32 or any(c not in "0123456789ABCDEF" for c in aid):
        raise ConfigError(f"--aid: {args.aid!r} is not an AID (5 to 16 bytes of hex)")
    return aid


def _in_reader(card_id: str, reader: int) -> CardProfile:
    from cards import serve
    from cards.profile import load_profile

    profile = load_profile(card_id)
    where = {str(v["card_id"]): k for k, v in serve.inserted().items()}
    if card_id in where and where[card_id] != reader:
        raise ConfigError(f"card {card_id} is in reader {where[card_id]}, not {reader}")
    if card_id not in where:
        raise ConfigError(f"card {card_id} is in no reader: `cardbus cards insert {card_id} "
                          f"--reader {reader}`")
    return profile


def _run(args: argparse.Namespace) -> int:
    from reader_agent.cardmgmt import run_card_management

    profile = _in_reader(args.card_id, args.reader)
    done = asyncio.run(run_card_management(
        reader=args.reader, issuer_id=args.issuer or profile.provider, operations=args.ops(args),
        terminal_id=args.terminal_id, bootstrap=args.bootstrap, timeout=args.timeout))
    for line in describe(done, profile, args.cards_command):
        print(line)
    return exitcodes.OK if done.ok else exitcodes.NO


def describe(done: CardManagementCompleted, profile: CardProfile, action: str) -> list[str]:
    """The result: one line (and, for ``apps``, one line per entry of the card's registry)."""
    card = f"{profile.card_id} ({profile.masked()})"
    if not done.ok:
        where = f" at {done.failed_step}" if done.failed_step else ""
        sw = f" (card status {done.sw:04X})" if done.sw is not None else ""
        return [f"{action} refused on {card}{where}: {done.reason}{sw}"]
    if action == "apps":
        head = f"{card}: card {done.card_life or '?'}, {len(done.applications)} entries"
        return [head] + [f"  {a.aid:32} {a.kind:15} "
                         f"{_LIFE.get(a.life & ~AppLife.LOCKED_BIT, f'{a.life:02X}')}"
                         f"{' LOCKED' if a.locked else ''}" for a in done.applications]
    installed = ", ".join(done.installed)
    what = f"installed {installed}" if installed else {
        "lock": "locked", "unlock": "unlocked", "delete-app": "deleted"}.get(action, "done")
    life = f", card {done.card_life}" if done.card_life not in (None, CardLife.SECURED.name) \
        else ""
    return [f"{what} on {card} through the platform's secure channel "
            f"({done.steps_relayed} APDUs relayed){life}"]


def _block(args: argparse.Namespace) -> int:
    from cards.profile import load_profile

    print(asyncio.run(report_card(load_profile(args.card_id), args.reason, args.bootstrap)))
    return exitcodes.OK


async def report_card(profile: CardProfile, reason: str | None, bootstrap: str | None) -> str:
    """The issuer's ``CardBlocked`` (``reason`` lost or stolen) or ``CardUnblocked`` (None),
    sealed with its identity key, on its request topic in the card's partition; the line that
    says what follows."""
    from cardbus.ceremony import provider_hsm
    from console.commands.cards import publish_one
    from streams.topics import provider_requests_topic

    if profile.kind != "emv":
        raise ConfigError(f"card {profile.card_id} is not a bank card")
    hsm = provider_hsm(profile.provider)
    head = header(f"provider:{profile.provider}", profile.pan_token[:64], datetime.now(UTC))
    ev: CardBlocked | CardUnblocked
    if reason is None:
        ev = CardUnblocked(**head, provider_id=profile.provider, pan_token=profile.pan_token,
                           masked_pan=profile.masked())
    else:
        ev = CardBlocked(**head, provider_id=profile.provider, pan_token=profile.pan_token,
                         masked_pan=profile.masked(), reason=reason)  # type: ignore[arg-type]
    await publish_one(provider_requests_topic(profile.provider), profile.pan_token,
                      hsm.sign_event(ev), bootstrap, party=f"provider-{profile.provider}")
    card = f"{profile.card_id} ({profile.masked()})"
    if reason is None:
        return (f"{card} unblocked at {profile.provider}: its next tap unblocks its payment "
                "application")
    code = "41" if reason == "lost" else "43"
    return (f"{card} reported {reason} to {profile.provider}: declined ({code}), blocked on "
            "the card at its next tap")
