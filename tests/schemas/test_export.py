"""The committed JSON Schema folder matches the models, and the check notices any change."""

from __future__ import annotations

import json
from pathlib import Path

from console.cli import main
from schemas.export import SCHEMA_DIR, check, expected_files, export
from schemas.registry import ALL_EVENTS


def test_committed_schemas_match_the_models() -> None:
    diffs = check(SCHEMA_DIR)
    assert diffs == [], "run `cardbus schemas export` and commit schemas/jsonschema/"


def test_one_valid_schema_file_per_event() -> None:
    files = expected_files()
    assert len(files) == len(ALL_EVENTS)
    for name, text in files.items():
        schema = json.loads(text)
        assert schema["title"] == name.removesuffix(".json")
        assert schema["additionalProperties"] is False
        assert {"type", "schema_version", "event_id", "occurred_at"} <= set(schema["required"])


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    export(tmp_path)
    assert check(tmp_path) == []
    (tmp_path / "CardTapped.json").write_text("{}\n")
    (tmp_path / "PaymentRequested.json").unlink()
    (tmp_path / "PaymentAuthorizedOld.json").write_text("{}\n")
    problems = {d.file: d.problem for d in check(tmp_path)}
    assert problems["CardTapped.json"].startswith("differs")
    assert problems["PaymentRequested.json"].startswith("missing")
    assert problems["PaymentAuthorizedOld.json"].startswith("stale")
    assert len(problems) == 3
    export(tmp_path)
    assert check(tmp_path) == []


def test_cli_check_exit_codes(tmp_path: Path, capsys: object) -> None:
    assert main(["schemas", "export", "--dir", str(tmp_path)]) == 0
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "TransitLoadApplied.json").write_text("{}\n")
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 1
