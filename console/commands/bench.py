"""``cardbus bench pipeline``: payments end to end through real workers, beside the bus's limit;
``cardbus bench chaos`` (faults under load) and ``cardbus bench security`` (the TLS cost)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from console.commands.reader import _sub


def register(sub: Any) -> None:
    bench = _sub(sub, "bench", "benchmarks")
    p = bench.add_parser(
        "pipeline", help="payments/s, latency, CPU/memory through the real workers",
        description=(
            "Measure the raw single-hop Kafka rate, then drive the whole payment pipeline "
            "(software terminals and cards -> platform worker(s) -> >=2 provider workers -> "
            "terminal results) in a fresh topic namespace: closed-loop maximum, open-loop at "
            "fractions of it, 1 vs 2 workers per stage and more partitions, a py-spy profile "
            "of the hottest worker, and the correctness accounting (every request exactly one "
            "result, settlement totals equal the approvals). Exit 1 if a payment was lost or "
            "duplicated or a ledger does not balance."))
    p.add_argument("--bootstrap", help="HOST:PORT (default $KAFKA_BOOTSTRAP_SERVERS or the "
                                       "running `cardbus broker`)")
    p.add_argument("--payments", type=int, default=6_000,
                   help="payments in the closed-loop maximum phase (default 6000)")
    p.add_argument("--window", type=int, default=300,
                   help="payments in flight in the closed loop (default 300)")
    p.add_argument("--terminals", type=int, default=16)
    p.add_argument("--cards", type=int, default=400)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--open-loop", default="0.25,0.5,0.75",
                   help="offered rates as fractions of the maximum ('' for none)")
    p.add_argument("--open-seconds", type=float, default=8.0)
    p.add_argument("--profile-seconds", type=float, default=5.0,
                   help="py-spy the hottest worker this long (0: no profile)")
    p.add_argument("--no-scaling", action="store_true",
                   help="only the base configuration (1 worker per stage)")
    p.add_argument("--scaled-partitions", type=int, default=12)
    p.add_argument("--raw-messages", type=int, default=60_000)
    p.add_argument("--worker-log-level", default="INFO",
                   help="log level of the workers (default INFO, as deployed)")
    p.add_argument("--keep", action="store_true",
                   help="keep the run's topics and its folder (the parties' key stores and the "
                        "workers' logs, to audit the trail: `cardbus audit --namespace NS --home "
                        "WORKDIR/NS --as operator`); a failed run keeps its folder anyway")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG chart here")
    p.set_defaults(func=_pipeline)
    _register_chaos(bench)
    _register_security(bench)


def _register_security(bench: Any) -> None:
    tls = bench.add_parser(
        "security", help="the raw single hop on a TLS+SCRAM cluster vs an --insecure one",
        description="Start a secured and an --insecure one-node cluster side by side, run the "
                    "raw single hop (aiokafka producer -> broker -> consumer, acks=all, "
                    "idempotent) on each, alternating, and print the rates and their ratio.")
    tls.add_argument("--messages", type=int, default=60_000)
    tls.add_argument("--rounds", type=int, default=2, help="hops per mode (alternating)")
    tls.add_argument("--json", action="store_true", help="print one JSON object")
    tls.set_defaults(func=_security)


def _register_chaos(bench: Any) -> None:
    from bench.faults import SCENARIOS

    names = [s.name for s in SCENARIOS]
    c = bench.add_parser(
        "chaos", help="payments under load while workers and brokers fail: nothing lost",
        description=(
            "Run the payment pipeline under open-loop load (a fraction of its measured "
            "maximum) on brokers of its own, and inject one fault per scenario: "
            + "; ".join(f"{s.name}: {s.title}" for s in SCENARIOS) + ". Terminals resend "
            "unanswered requests and cancel at their deadline. Per scenario: requests, final "
            "outcomes, lost, duplicated, approvals reversed, ledgers against the outcomes, "
            "time to recover. Exit 1 if any scenario lost or duplicated a payment or a "
            "ledger does not balance."))
    c.add_argument("--scenarios", default=",".join(names),
                   help=f"comma-separated, from: {', '.join(names)} (default all)")
    c.add_argument("--partitions", type=int, default=6,
                   help="partitions of the payment topics (default 6)")
    c.add_argument("--seconds", type=float, default=45.0,
                   help="open-loop load per scenario (default 45; faults at 6 and 14 s; the "
                        "broker scenarios at least 60 and 50)")
    c.add_argument("--rate", type=float, default=None,
                   help="offered payments/s (default: --fraction of the measured maximum)")
    c.add_argument("--fraction", type=float, default=0.5)
    c.add_argument("--max-payments", type=int, default=1500,
                   help="payments in the closed loop that measures the maximum")
    c.add_argument("--cards", type=int, default=400)
    c.add_argument("--terminals", type=int, default=32)
    c.add_argument("--platform-timeout", type=float, default=10.0,
                   help="seconds the platform waits for a bank before declining 91")
    c.add_argument("--deadline", type=float, default=30.0,
                   help="seconds a terminal waits (resending) before cancelling a payment")
    c.add_argument("--resend-after", type=float, default=2.0,
                   help="first resend pause, doubled up to 8 s (default 2)")
    c.add_argument("--no-resend", action="store_true",
                   help="terminals never resend nor cancel (shows what the stream layer "
                        "alone delivers)")
    c.add_argument("--faust-patches", default="all",
                   help="Faust patches in the workers: all, none or names "
                        "(streams/faust_patches.py)")
    c.add_argument("--trace", action="store_true",
                   help="workers log Faust's offset bookkeeping (CARDBUS_FAUST_TRACE)")
    c.add_argument("--exactly-once", action="store_true",
                   help="workers run Faust's processing_guarantee=exactly_once")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=_chaos)


def _chaos(args: argparse.Namespace) -> int:
    from bench.chaos import Options, run, text

    opts = Options(scenarios=tuple(x.strip() for x in args.scenarios.split(",") if x.strip()),
                   partitions=args.partitions, seconds=args.seconds, rate=args.rate,
                   fraction=args.fraction, max_payments=args.max_payments, cards=args.cards,
                   terminals=args.terminals, platform_timeout=args.platform_timeout,
                   deadline=args.deadline, resend_first=args.resend_after,
                   resend=not args.no_resend, patches=args.faust_patches, trace=args.trace,
                   exactly_once=args.exactly_once)
    result = run(opts)
    print(json.dumps(result) if args.json else text(result))
    return 0 if result["ok"] else 1


def _pipeline(args: argparse.Namespace) -> int:
    from bench.run import Options, run
    from streams.broker import resolve_bootstrap

    fractions = tuple(float(x) for x in args.open_loop.split(",") if x.strip())
    opts = Options(bootstrap=resolve_bootstrap(args.bootstrap), payments=args.payments,
                   window=args.window, terminals=args.terminals, cards=args.cards,
                   warmup=args.warmup, open_loop=fractions, open_seconds=args.open_seconds,
                   profile_seconds=args.profile_seconds, scaling=not args.no_scaling,
                   scaled_partitions=args.scaled_partitions, raw_messages=args.raw_messages,
                   worker_log_level=args.worker_log_level, keep=args.keep)
    result = run(opts)
    if args.plot is not None:
        from bench.report import plot

        plot(result, args.plot)
        result["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        from bench.report import text

        print(text(result))
    return 0 if result["ok"] else 1


def _security(args: argparse.Namespace) -> int:
    from bench.run import REQUEST_BYTES
    from bench.security import compare

    res = compare(messages=args.messages, size=REQUEST_BYTES, rounds=args.rounds,
                  say=lambda m: print(m, flush=True) if not args.json else None)
    if args.json:
        print(json.dumps(res))
        return 0
    med = res["median_msgs_per_s"]
    print(f"raw single hop, {res['messages']} x {res['message_bytes']} B, median of "
          f"{res['rounds']}: insecure {med['insecure']:.0f} msg/s, TLS+SCRAM "
          f"{med['secured']:.0f} msg/s: secured/insecure = {res['secured_over_insecure']:.2f} "
          "(same run; on a shared machine compare the ratio)")
    return 0
