"""``cardbus schemas export|check``: the committed JSON Schema files of every event."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.export import SCHEMA_DIR, check, export


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schemas", help="export the event JSON Schemas, or check the committed ones",
        description="The event contract as JSON Schema files (schemas/jsonschema/). `check` "
                    "fails (exit 1) when a model changed but its committed schema did not.",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, func, text in (("export", _export, "write the schema files from the models"),
                             ("check", _check, "compare the schema files with the models")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--dir", type=Path, default=SCHEMA_DIR,
                       help=f"schema folder (default {SCHEMA_DIR})")
        a.set_defaults(func=func)


def _export(args: argparse.Namespace) -> int:
    changed = export(args.dir)
    for path in changed:
        print(f"wrote {path}")
    print(f"{len(changed)} schema file(s) changed in {args.dir}")
    return 0


def _check(args: argparse.Namespace) -> int:
    diffs = check(args.dir)
    for diff in diffs:
        print(diff)
    if diffs:
        print(f"{len(diffs)} schema file(s) out of date: run `cardbus schemas export` and "
              "commit the result with the model change")
        return 1
    print(f"schemas up to date ({args.dir})")
    return 0
