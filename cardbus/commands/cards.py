"""``cardbus cards issue|insert|remove|list``: virtual cards, personalised and tapped."""

from __future__ import annotations

import argparse
from typing import Any

from reader_agent.cards import serve
from reader_agent.cards.profile import PROVIDERS, issue_card, list_profiles, save_profile


def register(sub: Any) -> None:
    p = sub.add_parser("cards", help="issue virtual cards and put them in virtual readers")
    csub = p.add_subparsers(dest="cards_command", metavar="<action>", required=True)
    issue = csub.add_parser("issue", help="personalise a new card from a provider's keys")
    issue.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
    issue.add_argument("--card-id", default=None)
    issue.add_argument("--balance", type=int, default=0,
                       help="transit cards: opening balance in minor units")
    issue.set_defaults(func=_issue)
    ins = csub.add_parser("insert", help="put a card into a virtual reader (a tap)")
    ins.add_argument("card_id")
    ins.add_argument("--reader", type=int, default=0, help="virtual reader index (default 0)")
    ins.set_defaults(func=_insert)
    rem = csub.add_parser("remove", help="take the card out of a virtual reader")
    rem.add_argument("--reader", type=int, default=0)
    rem.set_defaults(func=_remove)
    lst = csub.add_parser("list", help="issued cards and where they sit")
    lst.set_defaults(func=_list)


def _issue(args: argparse.Namespace) -> int:
    profile = issue_card(args.provider, card_id=args.card_id, balance=args.balance)
    path = save_profile(profile)
    print(f"issued {profile.card_id} ({profile.provider}, {profile.masked()}) -> {path}")
    return 0


def _insert(args: argparse.Namespace) -> int:
    pid = serve.insert(args.card_id, args.reader)
    print(f"card {args.card_id} in reader {args.reader} (pid {pid})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    card = serve.remove(args.reader)
    print(f"removed {card} from reader {args.reader}" if card
          else f"reader {args.reader} is empty")
    return 0


def _list(args: argparse.Namespace) -> int:
    where = {str(v["card_id"]): k for k, v in serve.inserted().items()}
    for p in list_profiles():
        slot = f"reader {where[p.card_id]}" if p.card_id in where else "-"
        print(f"{p.card_id:28} {p.provider:8} {p.kind:8} {p.masked():20} {slot}")
    return 0
