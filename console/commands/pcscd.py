"""``cardbus pcscd start|stop|status``: the real pcscd with CardBus's virtual readers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cardbus.readers import DEFAULT_BASE_PORT, DEFAULT_READERS
from reader_agent.pcscd import Pcscd


def register(sub: Any) -> None:
    p = sub.add_parser("pcscd", help="run pcscd with vpcd virtual readers (start|stop|status)")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--readers", type=int, default=DEFAULT_READERS,
                   help=f"number of virtual readers (default {DEFAULT_READERS})")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    p.add_argument("--debug", action="store_true", help="pcscd --debug --apdu into its log")
    p.add_argument("--listen-all", action="store_true",
                   help="let cards connect to the vpcd ports from other hosts (default: "
                        "127.0.0.1 only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pcscd = Pcscd(args.readers, args.base_port, listen_all=args.listen_all)
    if args.action == "start":
        pid = pcscd.start(debug=args.debug)
        print(f"pcscd running (pid {pid}); readers:")
        for name in pcscd.wait_ready():
            print(f"  {name}")
    elif args.action == "stop":
        print("pcscd stopped" if pcscd.stop() else "pcscd was not running (ours)")
    else:
        print(json.dumps(pcscd.status(), indent=2))
    return 0
