"""Sealed secrets in a party's vault: encrypted, bound to party and name, 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cardbus import vault
from cardbus.errors import MissingKeyError, UnwrapError


def test_a_secret_round_trips_and_is_not_stored_in_clear(tmp_path: Path) -> None:
    vault.create("terminal", tmp_path)
    vault.seal_secret("terminal", "kafka-scram:x", "correct horse battery", tmp_path)
    assert vault.open_secret("terminal", "kafka-scram:x", tmp_path) == "correct horse battery"
    path = vault.party_dir("terminal", tmp_path) / "secrets.json"
    assert b"correct horse" not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    vault.seal_secret("terminal", "kafka-scram:x", "second", tmp_path)  # replaces
    assert vault.open_secret("terminal", "kafka-scram:x", tmp_path) == "second"


def test_a_secret_moved_to_another_name_or_party_does_not_open(tmp_path: Path) -> None:
    for party in ("auditor", "operator"):
        vault.create(party, tmp_path)
    vault.seal_secret("auditor", "a", "s3cret", tmp_path)
    path = vault.party_dir("auditor", tmp_path) / "secrets.json"
    data = json.loads(path.read_text())
    data["b"] = data["a"]
    path.write_text(json.dumps(data))
    with pytest.raises(UnwrapError):
        vault.open_secret("auditor", "b", tmp_path)
    # the same record under the operator's vault: another storage key, another binding
    other = vault.party_dir("operator", tmp_path) / "secrets.json"
    other.write_text(json.dumps({"a": data["a"]}))
    with pytest.raises(UnwrapError):
        vault.open_secret("operator", "a", tmp_path)


def test_a_missing_secret_fails_loudly(tmp_path: Path) -> None:
    vault.create("platform", tmp_path)
    assert not vault.has_secret("platform", "nope", tmp_path)
    with pytest.raises(MissingKeyError, match="nope"):
        vault.open_secret("platform", "nope", tmp_path)
