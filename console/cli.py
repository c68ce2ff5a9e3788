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
from pathlib import Path

from cardbus import __version__
from cardbus.crypto import quiet_tdes_warnings
from cardbus.errors import CardBusError
from cardbus.logs import configure
from cardbus.paths import sub_dir
from console import exitcodes

# Modules that add subcommands, in the order `cardbus --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "console.commands.demo",
    "console.commands.broker",
    "console.commands.crypto",
    "console.commands.pcscd",
    "console.commands.cards",
    "console.commands.reader",
    "console.commands.bench",
    "console.commands.schemas",
    "console.commands.topics",
    "console.commands.credentials",
    "console.commands.setup",
    "console.commands.admit",
    "console.commands.worker",
    "console.commands.audit",
    "console.commands.settle",
    "console.commands.isohost",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardbus",
        description=(
            "CardBus: one card reader, many banks' cards, a trusted platform in between, "
            "everything an event on Apache Kafka. Run `cardbus <command> --help` for details."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exitcodes.epilog(),
    )
    parser.add_argument("--version", action="version", version=f"cardbus {__version__}")
    parser.add_argument("--log-level", default="INFO", help="log level (default: INFO)")
    parser.add_argument("--log-json", action="store_true", default=None,
                        help="log JSON lines even on a terminal")
    parser.add_argument("--log-file", type=Path, default=None, metavar="PATH",
                        help="where logs go: <state>/logs/cardbus.log by default (a "
                             "command's terminal is for its result), stderr for `worker` "
                             "(a service: its log is its output); '-' is stderr")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tdes_warnings()  # pyemv/psec's TripleDES warning, by category: not for users' eyes
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure(args.log_level, json=args.log_json, path=_log_path(args))
    try:
        return int(args.func(args) or exitcodes.OK)
    except CardBusError as exc:
        print(f"cardbus: error: {exc}", file=sys.stderr)
        return exitcodes.ERROR
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED


SERVICE_COMMANDS = frozenset({"worker"})
"""Long-running services: their log is their output (stderr). Every other command prints its
result and progress, and its logs (aiokafka's retried connection errors among them) go to the
log file."""


def _log_path(args: argparse.Namespace) -> Path | None:
    if args.log_file is not None:
        return None if str(args.log_file) == "-" else Path(args.log_file)
    if args.command in SERVICE_COMMANDS:
        return None
    return sub_dir("logs") / "cardbus.log"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
