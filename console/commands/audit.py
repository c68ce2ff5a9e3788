"""``cardbus audit`` (replay a namespace's topics and verify everything) and
``cardbus bench audit``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cardbus.errors import ConfigError
from cardbus.settings import settings
from console import exitcodes


def _timestamp_ms(text: str | None) -> int | None:
    """``--from``/``--to``: ISO 8601 (with zone) or epoch milliseconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a timestamp: {text!r} (ISO 8601 with a zone, or epoch ms)"
                          ) from None
    if when.tzinfo is None:
        raise ConfigError(f"timestamp {text!r} has no time zone")
    return int(when.timestamp() * 1000)


def _as_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as", dest="party", choices=("auditor", "operator"), default="auditor",
                   help="read as the namespace's auditor (CARDBUS_NAMESPACE; read-only, commits "
                        "nothing) or as the cluster's operator (any namespace)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit``, and ``audit`` under ``bench``."""
    p = subparsers.add_parser(
        "audit", help="replay the topics: verify seals, hash chains, re-derive decisions "
                      "and ledger, completeness, hygiene (exit 0 only if clean)")
    p.add_argument("--namespace", default=settings().namespace,
                   help="topic namespace to audit (default: CARDBUS_NAMESPACE or cardbus)")
    p.add_argument("--bootstrap", default=None,
                   help="HOST:PORT (default $KAFKA_BOOTSTRAP_SERVERS or the running "
                        "`cardbus broker`)")
    p.add_argument("--from", dest="start", default=None,
                   help="start of the range (ISO 8601 with zone, or epoch ms)")
    p.add_argument("--to", dest="end", default=None, help="end of the range (exclusive)")
    p.add_argument("--home", type=Path, default=None,
                   help="state folder with the parties' key stores (default: CARDBUS_HOME)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds after which a missing answer is a finding (default 10)")
    p.add_argument("--platform-timeout", type=float, default=3.0, metavar="SECONDS",
                   help="the platform worker's --timeout, for re-deriving its timeouts "
                        "(default 3)")
    p.add_argument("--platform-load-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="the platform worker's --load-timeout (top-ups; default 60)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--no-rederive", action="store_true", help="skip decision re-derivation")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--partitions", default=None, metavar="SPEC",
                   help="partition-parallel audit: audit only these partitions of the payment "
                        "topics (e.g. 0-2,5; the process with partition 0 also audits the "
                        "other topics) and write the part to --save for --merge")
    p.add_argument("--save", type=Path, default=None, metavar="FILE",
                   help="where --partitions writes its part of the audit")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="FILE",
                   help="merge the parts written by --partitions --save (covering every "
                        "partition once) into one report: the cross-partition checks run here")
    p.add_argument("--follow", action="store_true",
                   help="live: verify events as they arrive, from the checkpoint in "
                        "<home>/audit (a restart resumes), print each finding, publish it to "
                        "<namespace>.audit-findings; runs until Ctrl-C")
    p.add_argument("--grace", type=float, default=None,
                   help="--follow: seconds after a payment's last event before a missing "
                        "answer is a finding (default CARDBUS_AUDIT_GRACE_S)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="--follow: stop once everything is read and nothing came for this "
                        "long (measurements, tests)")
    _as_option(p)
    p.set_defaults(func=audit_command)

    r = subparsers.add_parser(
        "reconcile", help="match the banks' approvals with the terminals' outcomes (exit 0 "
                          "only if every approval was heard or undone)",
        description="Lists every approval a bank still holds for a payment whose terminal got "
                    "no approval, every approval told to a terminal without a bank approval, "
                    "and every told approval later reversed. Reads the namespace like the "
                    "audit (its own group, commits nothing).")
    r.add_argument("--namespace", default=settings().namespace,
                   help="topic namespace (default: CARDBUS_NAMESPACE or cardbus)")
    r.add_argument("--bootstrap", default=None, help="HOST:PORT (default: as for audit)")
    r.add_argument("--grace", type=float, default=60.0,
                   help="seconds a decision or outcome may be in flight (default 60)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    _as_option(r)
    r.set_defaults(func=reconcile_command)

    bench = subparsers.choices.get("bench") or subparsers.add_parser("bench", help="benchmarks")
    bench_sub = next((a for a in bench._actions
                      if isinstance(a, argparse._SubParsersAction)), None)
    if bench_sub is None:
        bench_sub = bench.add_subparsers(dest="bench_command", metavar="<bench>")
    b = bench_sub.add_parser("audit", help="audit events verified per second (>= 100,000 "
                                           "events), with Ed25519 verifications per second")
    b.add_argument("--events", type=int, default=100_000, help="at least this many events")
    b.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    b.add_argument("--cache", type=Path, default=None,
                   help="keep the generated trail (and its keys) in this folder for re-runs")
    b.add_argument("--split", action="store_true",
                   help="also: one process over every partition, then two processes over half "
                        "the partitions each (--partitions) and their merge: the speed-up")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=bench_audit_command)


def reconcile_command(args: argparse.Namespace) -> int:
    """Run the reconciliation; print what does not match; 0 only when everything does."""
    import time

    from audit.reader import read_namespace
    from audit.reconcile import reconcile
    from streams.broker import resolve_bootstrap

    capture = asyncio.run(read_namespace(resolve_bootstrap(args.bootstrap), args.namespace,
                                         party=args.party))
    result = reconcile(capture.records, now_ms=int(time.time() * 1000),
                       grace_ms=int(args.grace * 1000))
    lists = {"held_without_outcome": result.held_without_outcome,
             "outcome_without_decision": result.outcome_without_decision,
             "reversed_after_approval": result.reversed_after_approval,
             "in_flight": result.in_flight}
    if args.json:
        print(json.dumps({"ok": result.ok, "approvals": result.decisions,
                          "outcomes": result.outcomes, **lists}))
    else:
        print(f"{result.decisions} bank approvals, {result.outcomes} terminal outcomes")
        for name, ids in lists.items():
            print(f"{name}: {len(ids)}" + ("".join(f"\n  {pid}" for pid in ids[:50])))
        print("reconciled" if result.ok else "NOT reconciled")
    return exitcodes.OK if result.ok else exitcodes.NO


def audit_command(args: argparse.Namespace) -> int:
    """Run the audit; print the report; 0 only when clean."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from audit.engine import AuditOptions, audit_records
    from audit.keys import build_keybook
    from audit.reader import read_namespace
    from audit.report import render

    # pyemv/psec use TDES (EMV has no AES ARQC there): that one warning, by name.
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    if args.merge:
        return _merge(args)
    if args.follow:
        return _follow(args)
    partitions = None
    if args.partitions is not None:
        from audit.partial import parse_partitions

        partitions = parse_partitions(args.partitions)
        if args.save is None:
            raise ConfigError("--partitions needs --save FILE (its part, for --merge): a "
                              "subset alone cannot check whole payments")
    start_ms, end_ms = _timestamp_ms(args.start), _timestamp_ms(args.end)
    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True, disable=args.json and not console.is_terminal) as bar:
        task = bar.add_task(f"reading {args.namespace}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        from streams.broker import resolve_bootstrap

        args.bootstrap = resolve_bootstrap(args.bootstrap)
        capture = asyncio.run(read_namespace(args.bootstrap, args.namespace, party=args.party,
                                             start_ms=start_ms, end_ms=end_ms,
                                             progress=progress, partitions=partitions))
        bar.update(task, description="verifying")
        home = args.home or settings().home
        book = build_keybook(home, capture.key_changelog)
        options = AuditOptions(args.namespace, home=home, timeout_s=args.timeout,
                               workers=args.workers, rederive=not args.no_rederive,
                               partial=capture.partial, end_ms=end_ms, partitions=partitions,
                               platform_timeout_s=args.platform_timeout,
                               platform_load_timeout_s=args.platform_load_timeout)
        if partitions is not None:
            return _save_part(args, capture, options, book)
        report = audit_records(capture.records, options, book)
    report.ranges = {k: (capture.start[k], capture.stop[k]) for k in capture.start}
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        render(report)
    return exitcodes.OK if report.ok else exitcodes.NO


def _follow(args: argparse.Namespace) -> int:
    """``--follow``: one line per finding on stdout, progress on stderr, until Ctrl-C (or
    idle, with ``--exit-when-idle``); exit 0 if it found nothing in this run, 3 if it did."""
    import signal

    from audit.follow import FollowOptions
    from audit.live import LiveOptions, follow
    from streams.broker import resolve_bootstrap

    if args.partitions or args.start or args.end or args.save:
        raise ConfigError("--follow reads everything from its checkpoint: no --partitions, "
                          "--from, --to or --save")
    s = settings()
    home = args.home or s.home
    grace = args.grace if args.grace is not None else s.audit_grace_s
    options = LiveOptions(
        FollowOptions(args.namespace, home=home, grace_ms=int(grace * 1000),
                      rederive=not args.no_rederive, window=s.audit_follow_window,
                      platform_timeout_s=args.platform_timeout,
                      platform_load_timeout_s=args.platform_load_timeout),
        resolve_bootstrap(args.bootstrap), party=args.party, home=home,
        exit_when_idle_s=args.exit_when_idle)

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"following {args.namespace} (findings also on {args.namespace}.audit-findings)",
              file=sys.stderr)
        return await follow(options, say=lambda line: print(line, flush=True), stop=stop,
                            say_status=lambda m: print(m, file=sys.stderr, flush=True))

    run = asyncio.run(main())
    delays = sorted(run.delays_ms or [])
    summary = {"events": run.events, "findings": run.findings, "seconds": round(run.seconds, 2),
               "events_per_s": round(run.events / max(run.seconds, 1e-3), 1),
               "behind": run.behind, "cpu_s": round(run.cpu_s, 2)}
    if run.caught_up_s is not None:
        summary["caught_up_s"] = round(run.caught_up_s, 2)
        summary["events_per_s_to_catch_up"] = round(run.events / max(run.caught_up_s, 1e-3), 1)
    if delays:
        summary["finding_delay_ms_p50"] = round(delays[len(delays) // 2], 1)
        summary["finding_delay_ms_max"] = round(delays[-1], 1)
    print(json.dumps(summary) if args.json else
          "stopped: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
    return exitcodes.OK if not run.findings else exitcodes.NO


def _save_part(args: argparse.Namespace, capture: Any, options: Any, book: Any) -> int:
    """Audit this process's partitions and write the part (exit 1 if a per-record check
    already failed; the verdict is the merge's)."""
    from audit.engine import audit_partitions
    from audit.partial import save

    part = audit_partitions(capture.records, options, book)
    part.ranges = {k: (capture.start[k], capture.stop[k]) for k in capture.start
                   if k in part.ranges}
    save(part, args.save)
    summary = {"part": str(args.save), "partitions": sorted(options.partitions),
               "events_read": part.events_read, "findings_so_far": len(part.findings)}
    print(json.dumps(summary) if args.json else
          f"audited partitions {args.partitions}: {part.events_read:,} events, "
          f"{len(part.findings)} per-record finding(s); wrote {args.save} (merge the parts: "
          f"cardbus audit --merge FILE...)")
    return exitcodes.OK if not part.findings else exitcodes.NO


def _merge(args: argparse.Namespace) -> int:
    """Merge the parts into one report (no Kafka: the parts hold what the checks need)."""
    from audit.engine import AuditOptions, finish
    from audit.keys import build_keybook
    from audit.partial import load
    from audit.report import render

    parts = [load(path) for path in args.merge]
    home = args.home or settings().home
    options = AuditOptions(parts[0].namespace, home=home, timeout_s=args.timeout,
                           rederive=not args.no_rederive)
    report = finish(parts, options, build_keybook(home, []))
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        render(report)
    return exitcodes.OK if report.ok else exitcodes.NO


def bench_audit_command(args: argparse.Namespace) -> int:
    """Generate >= ``--events`` events in process, audit them, print the rates."""
    from bench.audit import run

    result: dict[str, Any] = run(args.events, workers=args.workers, cache=args.cache,
                                 say=lambda m: print(m, file=sys.stderr),
                                 split=getattr(args, "split", False))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"cardbus bench audit: {result['events']:,} events "
          f"({result['signed_events']:,} Ed25519-signed, {result['mac_events']:,} MAC), "
          f"{result['workers']} process(es) on {result['cores']} core(s)")
    rows = [("audit, everything (events/s)", "events_per_s"),
            ("audit without re-derivation (seals, chains, completeness, hygiene)",
             "verify_only_per_s"),
            ("Ed25519 verify, one core (/s)", "ed25519_verify_per_s_1core"),
            ("Ed25519 verify, all workers (/s)", "ed25519_verify_per_s_pool"),
            ("audit events/s per pooled Ed25519 verify/s", "ratio"),
            ("CPU: audit, everything (events per CPU second)", "events_per_cpu_s"),
            ("CPU: verify only (events per CPU second)", "verify_only_per_cpu_s"),
            ("CPU: Ed25519 verify (per CPU second)", "ed25519_verify_per_cpu_s"),
            ("projected on free cores: audit, everything (events/s)",
             "events_per_s_on_free_cores"),
            ("projected on free cores: verify only (events/s)",
             "verify_only_per_s_on_free_cores"),
            ("machine load average while measuring", "load_average")]
    if getattr(args, "split", False):
        rows += [("split: one process over every partition (s)", "one_process_s"),
                 ("split: two processes over half each, and the merge (s)", "two_processes_s"),
                 ("split: speed-up of two processes over one", "speedup_two_processes"),
                 ("split: speed-up on free cores (CPU of one / longest part + merge)",
                  "speedup_two_processes_on_free_cores"),
                 ("split: the same, each part measured alone (as on its own host)",
                  "speedup_two_processes_alone")]
    width = max(len(label) for label, _key in rows)
    for label, key in rows:
        print(f"  {label:<{width}} {result[key]:>12,.2f}")
    def met(key: str) -> str:
        return f"{'met' if result[key] >= 20_000 else 'not met'} ({result[key]:,.0f})"

    print(f"  verdict: {'clean' if result['ok'] else 'FINDINGS'}; target 20,000 events/s: "
          f"everything {met('events_per_s')}, without re-derivation "
          f"{met('verify_only_per_s')}")
    return 0
