"""``cardbus keys revoke``: a sealed ``KeyRevoked`` on the key history.

The operator (with the platform's identity key) may revoke any key; a provider only its own
signing keys (``--by provider:<id>``, sealed with that provider's key). From ``--at`` (default
now; never later than the record's own broker time) the audit reports every seal made with the
key as a finding (``audit.history``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

from cardbus.errors import ConfigError
from cardbus.settings import settings
from console import exitcodes

_OWNER = re.compile(r"^(?:sign:(?P<signer>.+)\.v\d+|tmk:(?P<terminal>[A-Za-z0-9\-]+)\.v\d+)$")


def owner_of(key_id: str) -> str:
    """The party a key belongs to: ``sign:<party>.v<n>`` or a terminal's ``tmk:<id>.v<n>``."""
    match = _OWNER.match(key_id)
    if match is None:
        raise ConfigError(f"key {key_id!r}: not a signing key (sign:<party>.v<n>) or a "
                          f"terminal MAC key (tmk:<terminal>.v<n>); give --owner")
    return match["signer"] or f"terminal:{match['terminal']}"


def register(keys_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys revoke``."""
    p = keys_sub.add_parser(
        "revoke", help="revoke a key version: a sealed KeyRevoked on the key history (the "
                       "audit then reports every seal made with it from --at on)")
    p.add_argument("key_id", help="the key version, e.g. tmk:T-0001.v1 or "
                                  "sign:provider:bank-a.v1")
    p.add_argument("--reason", required=True, help="why (stolen, lost, retired)")
    p.add_argument("--owner", default=None, help="the key's owner (default: from the key id)")
    p.add_argument("--by", default="platform",
                   help="who revokes: platform (the operator, any key; default) or "
                        "provider:<id> (its own signing keys only)")
    p.add_argument("--at", default=None,
                   help="effective from (ISO 8601 with zone, or epoch ms; default now)")
    p.add_argument("--namespace", default=settings().namespace,
                   help="topic namespace (default: CARDBUS_NAMESPACE or cardbus)")
    p.add_argument("--bootstrap", default=None, help="HOST:PORT (default: as for audit)")
    p.add_argument("--home", type=Path, default=None,
                   help="state folder with the revoking party's key store (default: "
                        "CARDBUS_HOME)")
    p.set_defaults(func=keys_revoke)


def keys_revoke(args: argparse.Namespace) -> int:
    """Seal and publish the revocation (as the operator), print where it went."""
    from audit.history import may_revoke
    from cardbus import ceremony
    from console.commands.audit import _timestamp_ms
    from schemas.base import header
    from schemas.keys import KeyRevoked
    from streams import clients, codec
    from streams.broker import resolve_bootstrap

    owner = args.owner or owner_of(args.key_id)
    if not may_revoke(args.by, args.key_id):
        raise ConfigError(f"{args.by} may not revoke {args.key_id}: only the platform or the "
                          f"key's owner (its own signing keys)")
    at_ms = _timestamp_ms(args.at)
    when = datetime.fromtimestamp(at_ms / 1000, UTC) if at_ms is not None else datetime.now(UTC)
    event = KeyRevoked(**header(args.by, f"revoke-{args.key_id}"), key_id=args.key_id,
                       owner=owner, revoked_at=when, reason=args.reason)
    hsm = (ceremony.platform_hsm(args.home) if args.by == "platform"
           else ceremony.provider_hsm(args.by.split(":", 1)[1], args.home))
    sealed = hsm.sign_event(event)
    topic = f"{args.namespace}.key-history"
    bootstrap = resolve_bootstrap(args.bootstrap)

    async def send() -> tuple[int, int]:
        producer = clients.producer(bootstrap, party="operator")
        await producer.start()
        try:
            md = await producer.send_and_wait(topic, codec.encode(sealed),
                                              key=owner.split(":", 1)[-1].encode())
            return md.partition, md.offset
        finally:
            await producer.stop()

    partition, offset = asyncio.run(send())
    print(f"revoked {args.key_id} (owner {owner}) from {when.isoformat()} by {args.by}: "
          f"{topic}/{partition}@{offset}")
    return exitcodes.OK
