"""``cardbus topics create|list``: the topic catalogue (streams/topics.py), on a broker
or printed."""

from __future__ import annotations

import argparse

from streams.acls import grants
from streams.topics import DAY_MS, TopicSettings, catalogue


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "topics", help="create/verify the CardBus topics, or print the catalogue",
        description="Every CardBus topic, its key, value types, partitions and config, from "
                    "one catalogue (streams/topics.py). `create` is idempotent and reports "
                    "drift (exit 3) instead of changing a topic that differs.",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)

    create = actions.add_parser("create", help="create missing topics, verify existing ones")
    create.add_argument("--bootstrap", default=None,
                        help="HOST:PORT[,HOST:PORT] (default $KAFKA_BOOTSTRAP_SERVERS, or the "
                             "running `cardbus broker`)")
    _common(create)
    create.add_argument("--replication", type=int, default=None,
                        help="replication factor (default $CARDBUS_TOPIC_REPLICATION or 1)")
    create.add_argument("--min-isr", type=int, default=None,
                        help="min.insync.replicas (default $CARDBUS_TOPIC_MIN_ISR or 1)")
    create.add_argument("--prefix", default="", help=argparse.SUPPRESS)  # test isolation
    create.set_defaults(func=_create)

    listing = actions.add_parser("list", help="print the catalogue")
    _common(listing)
    listing.add_argument("--acls", action="store_true",
                         help="print who may do what instead: every party's principal and its "
                              "ACLs (streams/acls.py, built from the catalogue)")
    listing.set_defaults(func=_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", default=None,
                   help="comma-separated provider ids whose request topics (and worker "
                        "changelogs) to include (default: every installed provider adapter)")
    p.add_argument("--retention-days", type=int, default=None,
                   help="retention of payment topics (default $CARDBUS_RETENTION_DAYS or 400; "
                        "at least 366 for audit)")


def _providers(args: argparse.Namespace) -> list[str]:
    if args.providers is None:
        from agents.providers.base import discover

        return sorted(discover())
    return [p.strip() for p in args.providers.split(",") if p.strip()]


def _overrides(args: argparse.Namespace) -> dict[str, int | None]:
    return {"replication_factor": getattr(args, "replication", None),
            "min_insync_replicas": getattr(args, "min_isr", None),
            "retention_days": args.retention_days}


def _bootstrap(args: argparse.Namespace) -> str:
    from streams.broker import resolve_bootstrap

    return resolve_bootstrap(args.bootstrap)


def _create(args: argparse.Namespace) -> int:
    from streams.admin import ensure_topics_sync, with_prefix

    specs = with_prefix(catalogue(_providers(args), with_changelogs=True), args.prefix)
    bootstrap = _bootstrap(args)
    report = ensure_topics_sync(bootstrap, specs, None, _overrides(args))
    for state in report.topics:
        print(state)
    created, drift = len(report.created), len(report.drift)
    print(f"{len(report.topics)} topics at {bootstrap}: {created} created, "
          f"{len(report.topics) - created - drift} ok, {drift} drifted")
    if drift:
        print("drift is reported, not fixed: change the topic (or the catalogue) on purpose")
        return 3
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.acls:
        return _list_acls(_providers(args))
    settings = TopicSettings.from_env(1, _overrides(args))
    rows = [("topic", "key", "values", "parts", "cleanup", "retention", "producers", "consumers")]
    for spec in catalogue(_providers(args)):
        conf = spec.config(settings)
        retention = (f"{int(conf['retention.ms']) // DAY_MS}d" if "retention.ms" in conf
                     else "-")
        rows.append((spec.name, spec.key, ",".join(spec.value_types), str(spec.partitions),
                     spec.cleanup, retention, ",".join(spec.producers), ",".join(spec.consumers)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _list_acls(providers: list[str]) -> int:
    rows = [("principal", "operation", "resource", "name", "pattern")]
    rows += [(g.principal, g.operation, g.resource_type, g.name, g.pattern)
             for g in grants(providers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("super users (every operation): User:broker (the nodes, mutual TLS), User:operator "
          "(topics, ACLs, credentials, terminal status, cut-overs); anyone else: nothing")
    return 0
