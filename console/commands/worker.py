"""``cardbus worker platform`` and ``cardbus worker provider <id>``: the Faust workers."""

from __future__ import annotations

import argparse
import warnings
from datetime import time as dt_time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cardbus.errors import ConfigError
from cardbus.paths import sub_dir

if TYPE_CHECKING:
    import faust

    from streams.topics import TopicSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a Faust worker: the trusted platform, or one provider",
        description=(
            "Run one Faust worker in the foreground until Ctrl-C. The platform consumes "
            "registrations, keys, enrollments, payment requests and provider results; a "
            "provider consumes only its own request topic. Several workers of the same kind "
            "share partitions through their consumer group. Needs `cardbus setup` first."
        ),
    )
    kinds = p.add_subparsers(dest="kind", metavar="<kind>", required=True)
    plat = kinds.add_parser("platform", help="the trusted platform")
    plat.add_argument("--timeout", type=float, default=3.0,
                      help="seconds to wait for a provider before declining 91 (default 3)")
    plat.add_argument("--load-timeout", type=float, default=60.0,
                      help="seconds a transit top-up may wait for its card after the payment "
                           "is approved before the payment is reversed (default 60)")
    prov = kinds.add_parser("provider", help="one provider (bank or transit operator)")
    prov.add_argument("provider_id", help="the provider's id, e.g. bank-a")
    prov.add_argument("--cutover", default=None, metavar="HH:MM",
                      help="close the settlement batch every day at this UTC time "
                           "(default: only on `cardbus settle`)")
    for q in (plat, prov):
        q.add_argument("--bootstrap", help="HOST:PORT (default $KAFKA_BOOTSTRAP_SERVERS or "
                                           "the running `cardbus broker`)")
        q.add_argument("--datadir", type=Path, default=None,
                       help="table state folder (default .cardbus/workers/<app>-<n>)")
        q.add_argument("--instance", type=int, default=1,
                       help="instance number when several workers of one kind run here")
        q.add_argument("--exactly-once", action="store_true",
                       help="Faust processing_guarantee=exactly_once (correctness does not "
                            "depend on it: every consumer is idempotent)")
        q.add_argument("--loglevel", default="warn", choices=("debug", "info", "warn", "error"))
        q.add_argument("--dumpable", action="store_true",
                       help="leave the process dumpable (a profiler such as py-spy attaches); "
                            "by default no core dumps and no attaching: clear keys and PINs "
                            "pass through a worker's memory")
    plat.set_defaults(func=_platform)
    prov.set_defaults(func=_provider)


def _run(app: faust.App, loglevel: str, *, dumpable: bool = False) -> int:
    import faust

    from cardbus.crypto import quiet_tdes_warnings
    from cardbus.processes import no_core_dumps

    quiet_tdes_warnings()
    if not dumpable:
        no_core_dumps()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="faust")
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every log
    # line: every debug line of Faust and aiokafka was then formatted and handled, per message
    # (about 5% of the platform's profile under load). No spinner: the root keeps ``loglevel``.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def _use_event_loop() -> None:
    """The event loop ``CARDBUS_EVENT_LOOP`` names, set before the app or any loop is made."""
    from cardbus.settings import settings

    if settings().event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("CARDBUS_EVENT_LOOP=uvloop: uvloop is not installed "
                              "(pip install 'cardbus[fast]')") from None
        import asyncio

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _platform(args: argparse.Namespace) -> int:
    _use_event_loop()
    from agents.platform.app import APP_ID, PlatformConfig, build
    from streams.broker import resolve_bootstrap

    bootstrap = resolve_bootstrap(args.bootstrap)
    cfg = PlatformConfig(
        bootstrap=bootstrap,
        datadir=args.datadir or sub_dir("workers", f"{APP_ID}-{args.instance}"),
        timeout=timedelta(seconds=args.timeout),
        load_timeout=timedelta(seconds=args.load_timeout),
        guarantee="exactly_once" if args.exactly_once else "at_least_once",
        topics=_topics(bootstrap))
    return _run(build(cfg), args.loglevel, dumpable=args.dumpable)


def _topics(bootstrap: str) -> TopicSettings:
    """Topic settings for the cluster at ``bootstrap`` (its size decides the replication)."""
    import asyncio

    from streams.admin import cluster_size
    from streams.topics import TopicSettings

    return TopicSettings.from_env(asyncio.run(cluster_size(bootstrap)))


def _cutover(text: str | None) -> dt_time | None:
    if text is None:
        return None
    try:
        hh, mm = text.split(":")
        return dt_time(int(hh), int(mm))
    except ValueError:
        raise ConfigError(f"--cutover {text!r}: expected HH:MM (UTC)") from None


def _provider(args: argparse.Namespace) -> int:
    _use_event_loop()
    from agents.providers.app import ProviderConfig, build
    from agents.providers.base import adapter_for
    from agents.providers.iso8583.adapter import IsoBridgeAdapter
    from streams.broker import resolve_bootstrap

    adapter = adapter_for(args.provider_id)
    bootstrap = resolve_bootstrap(args.bootstrap)
    if isinstance(adapter, IsoBridgeAdapter):  # a bank behind an ISO 8583 host: its bridge
        from agents.providers.iso8583.app import build
    cfg = ProviderConfig(
        adapter=adapter, bootstrap=bootstrap, topics=_topics(bootstrap),
        datadir=args.datadir or sub_dir("workers", f"provider-{adapter.provider_id}-"
                                                   f"{args.instance}"),
        guarantee="exactly_once" if args.exactly_once else "at_least_once",
        cutover=_cutover(args.cutover))
    return _run(build(cfg), args.loglevel, dumpable=args.dumpable)
