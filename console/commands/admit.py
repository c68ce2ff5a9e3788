"""``cardbus admit``: the operator admits a provider (its identity key and card ranges).

A provider's registration proves possession of its identity key, not that it may take anyone's
cards: the platform routes it only as an operator's signed ``ProviderAdmitted`` says (the
provider id, the identity key it must register with, its BIN ranges and AIDs; no overlap with
another provider). Locally the operator's key is the platform's identity key (as for terminal
status changes) and the provider's public identity key comes from its key store; a real bank
hands its public key to the operator out of band.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agents.providers.announce import admission_for
from agents.providers.base import adapter_for, discover
from cardbus import ceremony
from console import exitcodes
from streams.topics import PROVIDER_ADMISSIONS


async def admit(bootstrap: str | None, providers: list[str], home: Path | None = None) -> None:
    """Publish the operator's sealed admission of each of ``providers`` (their keys must have
    been made: ``cardbus setup``)."""
    from console.commands.cards import publish_one

    operator = ceremony.platform_hsm(home)
    for pid in providers:
        ev = operator.sign_event(admission_for(
            adapter_for(pid), ceremony.provider_hsm(pid, home).verifier))
        await publish_one(PROVIDER_ADMISSIONS.name, pid, ev, bootstrap, party="operator")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admit", help="admit providers: the identity keys and card ranges the platform routes",
        description="The operator's signed admission of each provider (its identity key, BIN "
                    "ranges and AIDs): the platform routes a registration only as admitted, "
                    "and refuses ranges that overlap another provider's. Needs `cardbus "
                    "setup` first (the providers' keys).")
    p.add_argument("--providers", default=None,
                   help="comma-separated provider ids (default: every installed adapter)")
    p.add_argument("--bootstrap", default=None)
    p.set_defaults(func=_admit)


def _admit(args: argparse.Namespace) -> int:
    providers = (args.providers.split(",") if args.providers else sorted(discover()))
    asyncio.run(admit(args.bootstrap, providers))
    print(f"admitted: {', '.join(providers)}")
    return exitcodes.OK
