"""``cardbus reader``, ``cardbus terminal enroll`` and ``cardbus bench reader``."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from cardbus.errors import CardBusError
from cardbus.logs import get_logger

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


def register(sub: Any) -> None:
    p = sub.add_parser("reader", help="run the reader agent on every PC/SC reader")
    p.add_argument("--amount", type=int, default=None,
                   help="arm a checkout: amount in minor units (for the next card)")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--pin", default=None, help="scripted PIN (demo/tests); default: ask")
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--once", action="store_true", help="exit after the first card")
    p.set_defaults(func=_reader)

    term = _sub(sub, "terminal", "this terminal's key store")
    e = term.add_parser("enroll", help="make the terminal's key pairs and publish enrollment")
    e.add_argument("--terminal-id", required=True)
    e.add_argument("--merchant-id", default="M-0001")
    e.add_argument("--merchant-name", default="CardBus demo shop")
    e.add_argument("--mcc", default="5411")
    e.add_argument("--bootstrap", default=None)
    e.add_argument("--no-publish", action="store_true")
    e.set_defaults(func=_enroll)

    bench = _sub(sub, "bench", "benchmarks")
    b = bench.add_parser("reader", help="card dialogue and detection times over real pcscd")
    b.add_argument("--taps", type=int, default=200)
    b.add_argument("--readers", type=int, default=4)
    b.add_argument("--bootstrap", default=None)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from reader_agent.bench import run_bench

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
    from reader_agent.keystore import TerminalKeyStore
    from schemas.values import Merchant

    store = TerminalKeyStore()
    if store.exists():
        raise CardBusError(f"a terminal key store already exists at {store.path}")
    merchant = Merchant(merchant_id=args.merchant_id, name=args.merchant_name, mcc=args.mcc)
    keys, event = store.enroll(args.terminal_id, merchant)
    print(f"terminal {keys.terminal_id} enrolled; key store {store.path}")
    if not args.no_publish:
        asyncio.run(_publish_one("cardbus.terminals", keys.terminal_id, event, args.bootstrap))
        print("enrollment published to cardbus.terminals")
    return 0


async def _publish_one(topic: str, key: str, event: object, bootstrap: str | None) -> None:
    from reader_agent.publisher import Publisher, default_bootstrap

    pub = Publisher(bootstrap or default_bootstrap())
    await pub.start()
    try:
        await pub.send(topic, key.encode(), event)
    finally:
        await pub.stop()


def _reader(args: argparse.Namespace) -> int:
    from reader_agent.runner import run_reader

    return asyncio.run(run_reader(amount=args.amount, currency=args.currency, pin=args.pin,
                                  bootstrap=args.bootstrap, once=args.once))
