"""``cardbus demo``: the main job, end to end (what `make demo` runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system end to end and print a summary (what `make demo` runs)",
        description=(
            "Start what is not running (Kafka broker, pcscd with virtual readers), create keys, "
            "topics and the platform, bank-a, bank-b and transit workers, issue virtual cards "
            "into the readers, enroll terminal T-0001, then: an approved payment with each bank "
            "card over real PC/SC, a wrong-PIN decline, a transit top-up, and a settlement "
            "batch. Prints a summary table, stops everything it started, and exits 0 only if "
            "every step behaved as expected."),
    )
    p.set_defaults(func=lambda _args: _demo())
    up = sub.add_parser(
        "up",
        help="run the whole local system in the foreground with a live view (Ctrl-C stops)",
        description=(
            "Start the broker, pcscd, keys, topics, the platform and provider workers, enroll "
            "terminal T-0001, and show per provider decisions, approvals, declines by code, "
            "latency p50/p99 and consumer lag until Ctrl-C. Pay from another shell with "
            "`cardbus cards issue/insert`, `cardbus pay` and `cardbus topup`. Ctrl-C stops "
            "everything it started; a second `cardbus up` finds the same state."),
    )
    up.set_defaults(func=lambda _args: _up())


def _up() -> int:
    from cardbus.crypto import quiet_tdes_warnings
    from console.up import run_up

    quiet_tdes_warnings()
    return run_up()


def _demo() -> int:
    from cardbus.crypto import quiet_tdes_warnings
    from console.demo import run_demo

    quiet_tdes_warnings()
    return run_demo()
