"""``cardbus setup``: keys for a local CardBus (storage keys, identities, KBPK ceremonies)."""

from __future__ import annotations

import argparse

from agents.providers.base import discover
from cardbus.ceremony import setup


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "setup",
        help="create the local parties' keys (idempotent)",
        description=(
            "Create, once, what key ceremonies create in a real deployment: a storage key "
            "(0600 file) and a sealed key store for the platform and for each installed "
            "provider, the providers' issuer keys, a KBPK shared by the platform and each "
            "provider, and the platform's public identity. Existing keys are never replaced."
        ),
    )
    p.add_argument("--providers", default=None,
                   help="comma-separated provider ids (default: every installed adapter)")
    p.set_defaults(func=_setup)


def _setup(args: argparse.Namespace) -> int:
    providers = args.providers.split(",") if args.providers else sorted(discover())
    report = setup(None, providers)
    for item in report.created:
        print(f"created {item}")
    print(f"ready: platform + {', '.join(report.providers)}")
    return 0
