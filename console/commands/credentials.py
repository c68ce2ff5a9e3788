"""``cardbus credentials ensure|rotate|check`` and ``cardbus kafka-config``: bus identities.

Each party (``platform``, ``provider-<id>``, ``terminal``, ``auditor``, ``operator``) is one
Kafka principal with a SCRAM-SHA-512 password sealed in its own vault; ``streams.acls`` says what
it may do. Passwords never appear on a command line or in a log line; ``kafka-config`` writes
one, on purpose, into a 0600 file for kcat and Kafka's own tools.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import confluent_kafka
from aiokafka.admin import AIOKafkaAdminClient

from cardbus.errors import ConfigError
from cardbus.paths import state_dir
from streams import access, credentials
from streams.broker import resolve_bootstrap
from streams.security import client_security, settle_tls_closes, write_properties

PARTY_HELP = "platform, provider-<id>, terminal, auditor or operator"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "credentials", help="bus identities: create, rotate and check SCRAM credentials",
        description="Each party is one Kafka principal (SCRAM-SHA-512, its password sealed in "
                    "its vault) with the ACLs `cardbus topics list --acls` prints.")
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)

    ensure = actions.add_parser(
        "ensure", help="create missing passwords, write credentials and ACLs (idempotent)")
    ensure.add_argument("--providers", default="", help="comma-separated provider ids")
    ensure.add_argument("--bootstrap", default=None, help="HOST:PORT (default: the broker)")
    ensure.set_defaults(func=_ensure)

    rotate = actions.add_parser(
        "rotate", help="give a party a new password (running clients keep their connections; "
                       "each process uses the new one from its next start)")
    rotate.add_argument("party", help=PARTY_HELP)
    rotate.add_argument("--bootstrap", default=None, help="HOST:PORT (default: the broker)")
    rotate.set_defaults(func=_rotate)

    check = actions.add_parser(
        "check", help="connect as a party and ask the cluster whether it may read/write topics")
    check.add_argument("party", help=PARTY_HELP)
    check.add_argument("--read", action="append", default=[], metavar="TOPIC")
    check.add_argument("--write", action="append", default=[], metavar="TOPIC")
    check.add_argument("--bootstrap", default=None, help="HOST:PORT (default: the broker)")
    check.set_defaults(func=_check)

    conf = sub.add_parser(
        "kafka-config", help="write a party's client properties file (kcat -F, Kafka tools)",
        description="Write the bootstrap servers, security protocol, SASL mechanism, user name, "
                    "password and CA location of a party into a 0600 properties file: "
                    "`kcat -F FILE` (the default flavour) or Kafka's tools' --command-config "
                    "(--flavour java).")
    conf.add_argument("party", help=PARTY_HELP)
    conf.add_argument("--output", type=Path, default=None,
                      help="file to write (default .cardbus/kafka-config/<party>.properties)")
    conf.add_argument("--flavour", choices=("kcat", "java"), default="kcat")
    conf.add_argument("--bootstrap", default=None, help="HOST:PORT (default: the broker)")
    conf.set_defaults(func=_kafka_config)


def _ensure(args: argparse.Namespace) -> int:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    report = credentials.ensure_parties(resolve_bootstrap(args.bootstrap), providers)
    if not report.secured:
        print("the cluster runs --insecure: no credentials or ACLs to make")
        return 0
    for party in report.new_passwords:
        print(f"new password sealed in the vault of {party}")
    print(f"{len(report.users)} SCRAM users written, {report.acls} ACLs in place")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    user = credentials.rotate(resolve_bootstrap(args.bootstrap), args.party)
    print(f"rotated the password of {user}; connections already open stay up, each process "
          f"of {args.party} uses the new password from its next start")
    return 0


def _check(args: argparse.Namespace) -> int:
    bootstrap = resolve_bootstrap(args.bootstrap)
    sec = client_security(args.party, bootstrap)
    asyncio.run(_connect(bootstrap, args.party))
    ops = credentials.authorized_operations(bootstrap, args.party, [*args.read, *args.write])
    for wanted, topics in (("READ", args.read), ("WRITE", args.write)):
        for topic in topics:
            if wanted not in ops.get(topic, set()):
                raise access.denied(sec, wanted, f"topic {topic}")
            print(f"{sec.principal} may {wanted} topic {topic}")
    return 0


async def _connect(bootstrap: str, party: str) -> None:
    """Open a real client connection as ``party`` (a refused one raises the diagnosed cause)."""
    sec = client_security(party, bootstrap)
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000,
                                 **sec.aiokafka())
    try:
        async with access.guarded(sec, bootstrap, operation="connect", resource=bootstrap):
            await client.start()
    finally:
        await client.close()
        await settle_tls_closes()


def _kafka_config(args: argparse.Namespace) -> int:
    bootstrap = resolve_bootstrap(args.bootstrap)
    path = args.output or state_dir() / "kafka-config" / f"{args.party}.{args.flavour}.properties"
    if path.exists() and path.is_dir():
        raise ConfigError(f"{path} is a folder")
    write_properties(args.party, bootstrap, path, flavour=args.flavour)
    print(f"wrote {path} (mode 0600): the credentials of {args.party}; keep it private")
    if args.flavour == "kcat":
        lib = kcat_environment().get("LD_LIBRARY_PATH")
        prefix = f"LD_LIBRARY_PATH={lib} " if lib else ""
        print(f"  e.g. {prefix}kcat -F {path} -L")
    else:
        print(f"  e.g. kafka-topics.sh --bootstrap-server {bootstrap} --command-config {path} "
              "--list")
    return 0


KCAT_SCRAM_MIN = (2, 6, 1)
"""librdkafka before 2.6.1 fails SCRAM against Kafka 4 brokers (edenhill/kcat#462); Debian 12's
kcat links librdkafka 2.0.2."""


def kcat_environment() -> dict[str, str]:
    """Environment for running the machine's ``kcat`` against the secured cluster: when its
    librdkafka is older than 2.6.1, ``LD_LIBRARY_PATH`` points it at the librdkafka that the
    confluent-kafka wheel ships (kcat's own code, a librdkafka that speaks SCRAM to Kafka 4)."""
    kcat = shutil.which("kcat")
    if kcat is None:
        return {}
    out = subprocess.run([kcat, "-V"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    if found and tuple(int(g) for g in found.groups()) >= KCAT_SCRAM_MIN:
        return {}
    libs = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs")
                  .glob("librdkafka*.so*"))
    if not libs:
        return {}
    folder = state_dir() / "kcat-librdkafka"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "librdkafka.so.1"
    if not link.exists() or link.resolve() != libs[0].resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(libs[0])
    current = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": f"{folder}:{current}" if current else str(folder)}
