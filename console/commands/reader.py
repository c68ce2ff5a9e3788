"""``cardbus reader``, ``cardbus terminal enroll`` and ``cardbus bench reader``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from cardbus.errors import CardBusError, ConfigError
from cardbus.logs import get_logger
from console import exitcodes

log = get_logger("cardbus.reader")


def _sub(sub: Any, name: str, help_: str) -> Any:
    """The sub-subparsers of command ``name``, shared with other modules (``bench``)."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help_)
        parser.add_subparsers(dest=f"{name}_command", metavar="<what>", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise CardBusError(f"command {name} has no subcommands")  # pragma: no cover


def _pin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pin-stdin", action="store_true",
                   help="read the PIN from standard input (scripts: `echo 1234 | cardbus ...`); "
                        "default: ask for it, hidden. A PIN never goes on the command line, "
                        "where `ps` and the shell history would show it")


def _pin(args: argparse.Namespace) -> str | None:
    """The PIN from standard input with ``--pin-stdin``; None means: ask for it."""
    if not args.pin_stdin:
        return None
    pin = sys.stdin.readline().strip()
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ConfigError("--pin-stdin: expected 4 to 12 digits on standard input")
    return pin


def register(sub: Any) -> None:
    p = sub.add_parser("reader", help="run the reader agent on every PC/SC reader")
    p.add_argument("--terminal-id", default=None,
                   help="the enrolled terminal to run as (default: the only one here)")
    p.add_argument("--amount", type=int, default=None,
                   help="arm a checkout: amount in minor units (for the next card)")
    p.add_argument("--currency", default="CNY")
    _pin_option(p)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--once", action="store_true", help="exit after the first card")
    p.set_defaults(func=_reader)

    t = sub.add_parser("topup", help="top up a transit card, paid by a bank card (PC/SC)")
    t.add_argument("--amount", type=int, required=True, help="amount in minor units")
    t.add_argument("--currency", default="CNY")
    t.add_argument("--bank-reader", type=int, default=0, help="virtual reader of the bank card")
    t.add_argument("--transit-reader", type=int, default=1,
                   help="virtual reader of the transit card")
    t.add_argument("--operator", default="transit", help="transit operator (provider id)")
    t.add_argument("--terminal-id", default=None)
    _pin_option(t)
    t.add_argument("--bootstrap", default=None)
    t.add_argument("--timeout", type=float, default=30.0)
    t.set_defaults(func=_topup)

    pay = sub.add_parser("pay", help="pay with the card in a virtual reader (PC/SC)",
                         description="One payment with the card sitting in virtual reader N "
                         "(put one there with `cardbus cards insert`): card dialogue, PIN, "
                         "request, the platform's answer, and the card's check of the ARPC.")
    pay.add_argument("--amount", type=int, required=True, help="amount in minor units")
    pay.add_argument("--currency", default="CNY")
    pay.add_argument("--reader", type=int, default=0, help="virtual reader index (default 0)")
    _pin_option(pay)
    pay.add_argument("--terminal-id", default=None)
    pay.add_argument("--bootstrap", default=None)
    pay.set_defaults(func=_pay)

    term = _sub(sub, "terminal", "this terminal's key store")
    e = term.add_parser("enroll", help="create the terminal's key store, enroll it with the "
                                       "platform and wait for its keys")
    e.add_argument("--terminal-id", required=True)
    e.add_argument("--bootstrap", default=None)
    e.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the platform's keys (default 60)")
    e.add_argument("--providers", type=int, default=1,
                   help="wait until the key set vouches for this many providers (default 1)")
    e.set_defaults(func=_enroll)
    for action, status in (("suspend", "suspended"), ("activate", "active")):
        st = term.add_parser(action, help=f"{action} a terminal (an operator's command, signed "
                                          "with the platform's identity key)")
        st.add_argument("--terminal-id", required=True)
        st.add_argument("--reason", default=f"{action}d by an operator")
        st.add_argument("--bootstrap", default=None)
        st.set_defaults(func=_status, status=status)

    bench = _sub(sub, "bench", "benchmarks")
    b = bench.add_parser("reader", help="card dialogue and detection times over real pcscd")
    b.add_argument("--taps", type=int, default=200)
    b.add_argument("--readers", type=int, default=4)
    b.add_argument("--bootstrap", default=None)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)


def _pay(args: argparse.Namespace) -> int:
    from reader_agent.runner import run_pay

    return asyncio.run(run_pay(reader=args.reader, amount=args.amount, currency=args.currency,
                               pin=_pin(args), terminal_id=args.terminal_id,
                               bootstrap=args.bootstrap))


def _bench(args: argparse.Namespace) -> int:
    from bench.reader import run_bench

    res = asyncio.run(run_bench(max(args.taps, 1), args.readers, args.bootstrap))
    if args.json:
        print(json.dumps(res))
    else:
        d, t = res["dialogue_ms"], res["detect_ms"]
        print(f"reader bench: {res['taps']} taps on {res['readers']} readers "
              f"({res['errors']} errors, {res['warmup_taps']} warm-up not counted), "
              f"broker {res['bootstrap']}")
        print(f"  dialogue (card connected -> payment request acked): "
              f"p50 {d['p50']:.2f} ms  p99 {d['p99']:.2f} ms")
        print(f"  pcscd insertion detection:                         "
              f"p50 {t['p50']:.2f} ms  p99 {t['p99']:.2f} ms")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from reader_agent.runner import enroll

    terminal = asyncio.run(enroll(args.terminal_id, args.bootstrap, timeout=args.timeout,
                                  providers=args.providers))
    print(f"terminal {terminal.terminal_id} enrolled; keys installed; trusted providers: "
          f"{', '.join(sorted(terminal.card_auth))}; {terminal.status}"
          + ("" if terminal.status == "active" else
             f" until an operator activates it (`cardbus terminal activate --terminal-id "
             f"{terminal.terminal_id}`)"))
    return 0


async def set_terminal_status(bootstrap: str | None, terminal_id: str,
                              status: str = "active", reason: str = "activated by the operator"
                              ) -> None:
    """The operator's signed act: activate or suspend ``terminal_id`` (signed with the
    platform's identity key, published as the operator)."""
    from cardbus.ceremony import platform_hsm
    from console.commands.cards import publish_one
    from schemas.base import header
    from schemas.terminals import TerminalStatusChanged
    from streams.topics import TERMINAL_STATUS

    ev = platform_hsm().sign_event(TerminalStatusChanged(
        **header("platform", terminal_id), terminal_id=terminal_id,
        status=status, reason=reason))  # type: ignore[arg-type]
    await publish_one(TERMINAL_STATUS.name, terminal_id, ev, bootstrap, party="operator")


def _status(args: argparse.Namespace) -> int:
    asyncio.run(set_terminal_status(args.bootstrap, args.terminal_id, args.status, args.reason))
    print(f"terminal {args.terminal_id}: {args.status} ({args.reason})")
    return 0


def _reader(args: argparse.Namespace) -> int:
    from reader_agent.runner import run_reader

    return asyncio.run(run_reader(terminal_id=args.terminal_id, amount=args.amount,
                                  currency=args.currency, pin=_pin(args),
                                  bootstrap=args.bootstrap, once=args.once))


def _topup(args: argparse.Namespace) -> int:
    from reader_agent.runner import run_topup

    res = asyncio.run(run_topup(
        amount=args.amount, currency=args.currency, bank_reader=args.bank_reader,
        transit_reader=args.transit_reader, operator=args.operator,
        terminal_id=args.terminal_id, pin=_pin(args), bootstrap=args.bootstrap,
        timeout=args.timeout))
    print(res.summary())
    return TOPUP_EXIT.get(res.outcome, exitcodes.ERROR)


TOPUP_EXIT = {"loaded": exitcodes.OK, "declined": exitcodes.NO, "refused": exitcodes.NO,
              "timeout": exitcodes.NO_ANSWER, "unconfirmed": exitcodes.NO_ANSWER}
"""A top-up's outcome -> exit code (anything else, such as a card that did not take the
load, is an error)."""
