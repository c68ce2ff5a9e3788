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
            "provider, and the platform's public identity. Existing keys are never replaced. "
            "With a secured `cardbus broker` running, also each provider's bus principal, "
            "password (sealed in its vault) and ACLs."
        ),
    )
    p.add_argument("--providers", default=None,
                   help="comma-separated provider ids (default: every installed adapter)")
    p.set_defaults(func=_setup)


def _setup(args: argparse.Namespace) -> int:
    from streams import broker, credentials

    providers = args.providers.split(",") if args.providers else sorted(discover())
    report = setup(None, providers)
    for item in report.created:
        print(f"created {item}")
    cluster = broker.status()
    if cluster is not None and not cluster.insecure:  # the bus identities of these providers
        bus = credentials.ensure_parties(cluster.bootstrap, report.providers)
        print(f"bus identities: {len(bus.users)} principals, {bus.acls} ACLs in place")
    print(f"ready: platform + {', '.join(report.providers)}")
    return 0
