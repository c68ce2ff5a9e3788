"""The exit codes of every ``cardbus`` command: one table, shown by ``cardbus --help``."""

from __future__ import annotations

OK = 0
"""It worked: approved, loaded, clean, running."""
ERROR = 1
"""It could not do its job: bad input, missing keys, broker or pcscd unreachable, card not
accepted (one line on stderr says what and what to do)."""
USAGE = 2
"""The command line is wrong (argparse)."""
NO = 3
"""It ran and the answer is no: declined, refused, audit findings, topic drift, not running."""
NO_ANSWER = 4
"""No final answer in time: the terminal keeps its request for reversal (payments), the
operator's answer never came (top-ups)."""
INTERRUPTED = 130
"""Ctrl-C."""

TABLE = ((OK, "ok: approved, loaded, clean, running"),
         (ERROR, "error: bad input, missing keys, broker/pcscd unreachable, card not accepted"),
         (USAGE, "usage: the command line is wrong"),
         (NO, "the answer is no: declined, refused, audit findings, topic drift, not running"),
         (NO_ANSWER, "no answer in time (payment or top-up outcome unknown)"),
         (INTERRUPTED, "interrupted (Ctrl-C)"))


def epilog() -> str:
    """The table as ``--help`` shows it."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in TABLE)
