"""``cardbus cards issue|insert|remove|list``: virtual cards, issued by the providers' adapters
(and their HSMs, after ``cardbus setup``) and tapped in virtual readers; card management and
lost cards (``apps``, ``install``, ``lock``, ``unlock``, ``delete-app``, ``block``,
``unblock``) in ``console.commands.cardmgmt``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cardbus.cardprofile import CardProfile
from cardbus.errors import ConfigError
from cards import serve
from cards.profile import list_profiles, save_profile


def register(sub: Any) -> None:
    p = sub.add_parser("cards", help="issue virtual cards and put them in virtual readers")
    csub = p.add_subparsers(dest="cards_command", metavar="<action>", required=True)
    issue = csub.add_parser("issue", help="personalise a new card with a provider's keys")
    issue.add_argument("--provider", required=True,
                       help="provider id (an installed adapter: bank-a, bank-b, transit, ...)")
    issue.add_argument("--card-id", default=None)
    issue.add_argument("--pin", default="1234", help="bank cards: the card's PIN (default 1234)")
    issue.add_argument("--balance", type=int, default=0,
                       help="opening balance in minor units (bank account or transit purse)")
    issue.add_argument("--offline", action="store_true",
                       help="bank cards: do not publish CardIssued (the provider will not know "
                            "the card until it is published)")
    issue.add_argument("--bootstrap", default=None)
    issue.set_defaults(func=_issue)
    ins = csub.add_parser("insert", help="put a card into a virtual reader (a tap)")
    ins.add_argument("card_id")
    ins.add_argument("--reader", type=int, default=0, help="virtual reader index (default 0)")
    ins.set_defaults(func=_insert)
    rem = csub.add_parser("remove", help="take a card out of its virtual reader",
                          description="Take a card out: name the card, or the reader it sits "
                                      "in (`cards remove my-card` or `cards remove --reader 0`).")
    rem.add_argument("card_id", nargs="?", default=None,
                     help="the card to take out (default: whatever sits in --reader)")
    rem.add_argument("--reader", type=int, default=None,
                     help="virtual reader index (default 0 when no card is named)")
    rem.set_defaults(func=_remove)
    lst = csub.add_parser("list", help="issued cards and where they sit")
    lst.set_defaults(func=_list)
    from console.commands.cardmgmt import register_actions

    register_actions(csub)


def issue_card(provider: str, *, pin: str = "1234", balance: int = 0,
               card_id: str | None = None, publish: bool = True,
               bootstrap: str | None = None) -> CardProfile:
    """Issue through ``provider``'s adapter and HSM, save the profile, and (bank cards) publish
    the ``CardIssued`` that opens the account at the running provider."""
    from datetime import UTC, datetime

    from agents.providers.base import adapter_for, card_issued_event
    from cardbus.ceremony import provider_hsm

    adapter = adapter_for(provider)
    hsm = provider_hsm(provider)
    if adapter.kind == "transit":
        make = getattr(adapter, "issue_transit_card", None)
        if make is None:
            raise ConfigError(f"transit provider {provider} cannot issue cards")
        profile: CardProfile = make(hsm, balance=balance, card_id=card_id)
        save_profile(profile)
        return profile
    issued = adapter.issue_card(hsm, pin=pin, opening_balance=balance, card_id=card_id)
    if publish:  # first: a card its provider never heard of is not saved
        from streams.topics import provider_requests_topic

        event = card_issued_event(issued, hsm, datetime.now(UTC))
        asyncio.run(publish_one(provider_requests_topic(provider), issued.card.pan_token,
                                event, bootstrap, party=f"provider-{provider}"))
    save_profile(issued.profile)
    return issued.profile


async def publish_one(topic: str, key: str, event: Any, bootstrap: str | None, *,
                      party: str, timeout: float = 15.0) -> None:
    """Publish one event (acks=all) or raise ``BrokerError`` saying what to do."""
    from cardbus.errors import BrokerError
    from reader_agent.publisher import Publisher
    from streams.broker import resolve_bootstrap

    pub = Publisher(resolve_bootstrap(bootstrap), client_id=f"cardbus-cli-{party}", party=party)
    try:
        async with asyncio.timeout(timeout):
            await pub.start()
            try:
                await pub.send(topic, key.encode(), event)
                if pub.outbox:
                    raise BrokerError(f"the broker at {pub.bootstrap} did not take the event")
            finally:
                pub.outbox.clear()
                await pub.producer.stop()
    except TimeoutError:
        raise BrokerError(f"no Kafka broker answered at {pub.bootstrap} within {timeout:.0f}s: "
                          "start one (`cardbus broker start`), or issue with --offline") from None


def _issue(args: argparse.Namespace) -> int:
    profile = issue_card(args.provider, pin=args.pin, balance=args.balance,
                         card_id=args.card_id, publish=not args.offline,
                         bootstrap=args.bootstrap)
    print(f"issued {profile.card_id} ({profile.provider}, {profile.masked()})")
    return 0


def _insert(args: argparse.Namespace) -> int:
    pid = serve.insert(args.card_id, args.reader)
    print(f"card {args.card_id} in reader {args.reader} (pid {pid})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    reader = args.reader
    if args.card_id is not None:
        where = {str(v["card_id"]): k for k, v in serve.inserted().items()}
        if args.card_id not in where:
            raise ConfigError(f"card {args.card_id} is in no reader (`cardbus cards list`)")
        if reader is not None and where[args.card_id] != reader:
            raise ConfigError(f"card {args.card_id} is in reader {where[args.card_id]}, "
                              f"not {reader}")
        reader = where[args.card_id]
    reader = 0 if reader is None else reader
    card = serve.remove(reader)
    print(f"removed {card} from reader {reader}" if card else f"reader {reader} is empty")
    return 0


def _list(args: argparse.Namespace) -> int:
    where = {str(v["card_id"]): k for k, v in serve.inserted().items()}
    for p in list_profiles():
        slot = f"reader {where[p.card_id]}" if p.card_id in where else "-"
        print(f"{p.card_id:28} {p.provider:8} {p.kind:8} {p.masked():20} {slot}")
    return 0
