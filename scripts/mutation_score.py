"""Print the mutation score of the last `mutmut run` (``make mutation``), per module and in all,
and the surviving mutants (``mutmut show <name>`` prints one).

Score = (killed + timeout) / (mutants checked); a mutant no test reaches ("no tests") or one
that survives counts against it; columns: score, checked/all, module.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.__main__ import status_by_exit_code


def main(root: Path = Path("mutants")) -> int:
    if not root.is_dir():
        print("no mutants/ folder: run `make mutation` first", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    survivors: list[str] = []
    for meta in sorted(root.rglob("*.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(status_by_exit_code[c] for c in codes.values())
        total.update(counts)
        survivors += [k for k, c in codes.items()
                      if status_by_exit_code[c] in ("survived", "no tests")]
        print(f"{_shown(counts)}  {_checked(counts):5d}/{sum(counts.values()):<5d}  "
              f"{meta.relative_to(root).with_suffix('')}")
    print(f"{_shown(total)}  {_checked(total):5d}/{sum(total.values()):<5d}  all "
          f"({dict(total)})")
    print(f"\n{len(survivors)} not killed:")
    for name in survivors:
        print(f"  {name}")
    return 0


def _checked(counts: Counter[str]) -> int:
    return sum(n for s, n in counts.items() if s not in ("not checked", "skipped"))


def _shown(counts: Counter[str]) -> str:
    """The score of the checked mutants (``  n/a`` when none was checked)."""
    checked = _checked(counts)
    if not checked:
        return "   n/a"
    return f"{(counts['killed'] + counts['timeout']) / checked:6.1%}"


if __name__ == "__main__":
    sys.exit(main())
