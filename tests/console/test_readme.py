"""The README says what the code does: every setting in its table, every exit code."""

from __future__ import annotations

from pathlib import Path

from cardbus.settings import table
from console import exitcodes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for variable, _default, _meaning in table():
        assert f"| `{variable}` |" in section, f"{variable} missing from the README's settings"


def test_every_exit_code_is_in_the_readme() -> None:
    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code, _text in exitcodes.TABLE:
        assert f"{code} " in section, f"exit code {code} missing from the README"
