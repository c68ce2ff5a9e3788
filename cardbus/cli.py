"""The ``cardbus`` command line.

Each subcommand family lives in its own module under ``cardbus/commands/`` (or next to the part
it drives) and exposes ``register(subparsers)``; handlers take the parsed ``args`` and return an
exit code. A ``CardBusError`` reaching the top is printed as one clear line (what is wrong and
what to do), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cardbus import __version__
from cardbus.errors import CardBusError
from cardbus.logs import configure

# Modules that add subcommands, in the order `cardbus --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "cardbus.commands.demo",
    "cardbus.commands.broker",
    "cardbus.commands.crypto",
    "cardbus.commands.pcscd",
    "cardbus.commands.cards",
    "cardbus.commands.reader",
    "cardbus.commands.bench",
    "cardbus.commands.schemas",
    "cardbus.commands.topics",
    "cardbus.commands.credentials",
    "cardbus.commands.setup",
    "cardbus.commands.worker",
    "cardbus.commands.audit",
    "cardbus.commands.settle",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardbus",
        description=(
            "CardBus: one card reader, many banks' cards, a trusted platform in between, "
            "everything an event on Apache Kafka. Run `cardbus <command> --help` for details."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cardbus {__version__}")
    parser.add_argument("--log-level", default="INFO", help="log level (default: INFO)")
    parser.add_argument("--log-json", action="store_true", default=None,
                        help="log JSON lines even on a terminal")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure(args.log_level, json=args.log_json)
    try:
        return int(args.func(args) or 0)
    except CardBusError as exc:
        print(f"cardbus: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
