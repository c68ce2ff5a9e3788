"""``cardbus keys init`` (the platform storage key) and ``cardbus bench crypto``."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from cardbus.paths import state_dir


def default_key_path() -> Path:
    """Where ``keys init`` writes when no ``--path`` is given."""
    return state_dir() / "keys" / "storage-key.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and ``bench`` to the CLI."""
    keys = subparsers.add_parser("keys", help="platform storage key management, "
                                              "key revocation")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="<keys command>")
    init = keys_sub.add_parser(
        "init", help="create the platform storage key file (mode 0600), or rotate it")
    init.add_argument("--path", type=Path, default=None,
                      help=f"key file (default: {default_key_path()})")
    init.add_argument("--rotate", action="store_true",
                      help="add a new key version; old versions keep opening old records")
    init.set_defaults(func=keys_init)
    from console.commands import revoke

    revoke.register(keys_sub)

    bench = subparsers.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="<bench>")
    crypto = bench_sub.add_parser("crypto", help="crypto core operations per second")
    crypto.add_argument("--json", action="store_true", help="print one JSON object")
    crypto.add_argument("--seconds", type=float, default=0.5,
                        help="time per measurement (default 0.5)")
    crypto.set_defaults(func=bench_crypto)


def keys_init(args: argparse.Namespace) -> int:
    """Create (or rotate) the storage key file."""
    from cardbus.crypto.keystore import ENV_VAR, init_storage_key_file

    path: Path = args.path or default_key_path()
    version = init_storage_key_file(path, rotate=args.rotate)
    verb = "rotated" if args.rotate else "created"
    print(f"{verb} storage key {path} (mode 0600), current version {version}")
    print(f"the platform reads it with --key-file {path} or {ENV_VAR}; back it up: "
          "records encrypted under it cannot be opened without it")
    return 0


def bench_crypto(args: argparse.Namespace) -> int:
    """Run the crypto benchmark and print the figures."""
    from cryptography.utils import CryptographyDeprecationWarning

    from bench import crypto as bench

    # pyemv/psec use two-key TDES (EMV has no AES ARQC there): that one warning, by name.
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    result = bench.run(args.seconds)
    if args.json:
        print(json.dumps(result))
        return 0
    m = result["machine"]
    print(f"cardbus bench crypto: {m['cores']} cores, {m['cpu']}, Python {m['python']}, "
          f"cryptography {m['cryptography']}, {m['openssl']}; one thread")
    rows = [("ARQC verify (ICC MK + session key + MAC)", "arqc_verify_per_s", "/s"),
            (f"sign ({result['signature']}, {result['event_bytes']} B event)", "sign_per_s",
             "/s"),
            ("verify", "verify_per_s", "/s"),
            ("PIN translation (PAN decrypt + format 4 in/out)", "pin_translate_per_s", "/s"),
            ("key unwrap (X25519 + HKDF + AES-GCM)", "unwrap_per_s", "/s"),
            ("platform crypto per payment", "platform_us_per_payment", " µs"),
            ("provider crypto per payment", "provider_us_per_payment", " µs")]
    for label, key, unit in rows:
        print(f"  {label:<52} {result[key]:>12,.1f}{unit}")
    return 0
