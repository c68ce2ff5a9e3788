"""JSON Schema export of every event, and the check that the committed files match the models.

``schemas/jsonschema/<Type>.json`` is committed: a change to the contract then shows in review,
and ``cardbus schemas check`` (CI) fails when a model changed but its exported file did not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.base import Event
from schemas.registry import ALL_EVENTS, type_name

SCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"
_ID_BASE = "https://cardbus.invalid/schemas/"


def event_schema(model: type[Event]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``model`` as it is accepted from the wire."""
    schema = model.model_json_schema(mode="validation")
    # the models default these two, but the wire (streams.codec.parse) requires them
    envelope = ("type", "schema_version")
    schema["required"] = [*envelope,
                          *[f for f in schema.get("required", []) if f not in envelope]]
    name = type_name(model)
    version = model.model_fields["schema_version"].default
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_ID_BASE}{name}.v{version}.json",
        **schema,
    }


def render(model: type[Event]) -> str:
    """The exact file text for ``model`` (sorted keys, 2-space indent, final newline)."""
    return json.dumps(event_schema(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> text, for every event model."""
    return {f"{type_name(m)}.json": render(m) for m in ALL_EVENTS}


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``, drop stale ones; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = expected_files()
    written = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
            written.append(stale)
    return written


@dataclass(frozen=True)
class SchemaDiff:
    """One difference between the committed folder and the models."""

    file: str
    problem: str  # "missing", "stale", "differs"

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def check(directory: Path = SCHEMA_DIR) -> list[SchemaDiff]:
    """Differences between ``directory`` and the models (empty when they agree)."""
    wanted = expected_files()
    diffs = []
    for name, text in sorted(wanted.items()):
        path = directory / name
        if not path.exists():
            diffs.append(SchemaDiff(name, "missing (model has no exported schema)"))
        elif path.read_text(encoding="utf-8") != text:
            diffs.append(SchemaDiff(name, "differs from the model"))
    if directory.exists():
        for path in sorted(directory.glob("*.json")):
            if path.name not in wanted:
                diffs.append(SchemaDiff(path.name, "stale (no model has this type)"))
    return diffs
