"""``cardbus broker start|stop|status``: the local Apache Kafka broker (KRaft, no Docker)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agents.providers.base import discover
from cardbus.settings import settings
from streams import broker, credentials, tls


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="start, stop or inspect the local Apache Kafka broker",
        description=(
            "Run a real Apache Kafka broker (KRaft mode, jars from Maven Central, Java 17+) on "
            "127.0.0.1. One node by default; --brokers 3 starts a three-node cluster with "
            "replication factor 3 and min.insync.replicas=2. Secured by default: clients on "
            "TLS with SASL/SCRAM-SHA-512, nodes on mutual TLS, no access without an ACL; the "
            "cluster's CA, certificates and the operator's credential are made on first start, "
            "and the parties' credentials and ACLs after each start. State lives under "
            ".cardbus/kafka (or $CARDBUS_HOME/kafka, or $CARDBUS_KAFKA_CLUSTER)."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)

    start = actions.add_parser("start", help="start the broker and wait until it answers")
    start.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                       help="number of nodes (1, or 3 for a fault-tolerant cluster)")
    start.add_argument("--port", type=int,
                       default=settings().kafka_port,
                       help="client port of node 1; node i uses port+i-1, controllers port+100 "
                            "(default 9092 or $CARDBUS_KAFKA_PORT)")
    start.add_argument("--free-port", action="store_true",
                       help="use the first free loopback port from --port upwards (and print "
                            "the bootstrap), instead of failing when --port is taken")
    start.add_argument("--insecure", action="store_true",
                       help="plaintext, no authentication, no ACLs (switching mode wipes the "
                            "cluster's data)")
    start.add_argument("--providers", default=None,
                       help="comma-separated provider ids whose principals and ACLs to make "
                            "(default: every installed provider adapter)")
    start.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker (SIGTERM by PID, then SIGKILL)")
    stop.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="say whether the broker runs, and where")
    status.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    status.set_defaults(func=_status)

    fetch = actions.add_parser("fetch", help="only fetch the Kafka jars from Maven Central")
    fetch.set_defaults(func=_fetch)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    running = broker.status(args.home)
    if args.free_port and running is None:
        cluster = broker.start_on_free_ports(args.home, brokers=args.brokers,
                                             start_port=args.port, progress=_say,
                                             insecure=args.insecure)
        started = True
    else:
        cluster, started = broker.start(args.home, brokers=args.brokers, port=args.port,
                                        progress=_say, insecure=args.insecure)
    if not started:
        print(f"broker already running: {cluster.brokers} node(s) at {cluster.bootstrap} "
              f"({_mode(cluster)}, pids {', '.join(map(str, cluster.pids))}); "
              "`cardbus broker stop` to stop it")
        return 0
    if not cluster.insecure and (args.home is None or args.home == broker.default_home()):
        providers = (args.providers.split(",") if args.providers is not None
                     else sorted(discover()))
        report = credentials.ensure_parties(cluster.bootstrap, providers)
        _say(f"bus identities: {len(report.users)} principals, {report.acls} ACLs")
    print(f"broker started: {cluster.brokers} node(s) at {cluster.bootstrap} "
          f"({_mode(cluster)}) in {time.monotonic() - t0:.1f}s")
    print(f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    cluster = broker.stop(args.home)
    if cluster is None:
        print("broker not running: nothing to stop")
        return 0
    print(f"broker stopped ({cluster.brokers} node(s) at {cluster.bootstrap})")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = broker.status(args.home)
    if cluster is None:
        print("broker not running: start it with `cardbus broker start`")
        return 3
    print(f"broker running: {cluster.brokers} node(s) at {cluster.bootstrap} "
          f"({_mode(cluster)}, pids {', '.join(map(str, cluster.pids))})")
    return 0


def _mode(cluster: broker.Cluster) -> str:
    if cluster.insecure:
        return "INSECURE: plaintext, no authentication, no ACLs"
    return f"TLS + SCRAM-SHA-512 + ACLs, CA {tls.ca_file(cluster.home)}"


def _fetch(_args: argparse.Namespace) -> int:
    print(f"Kafka jars in {broker.fetch_jars(_say)}")
    return 0
