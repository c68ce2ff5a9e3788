"""The shared-table copy (streams.replica.Replicated): own writes visible at once and not
shadowed by the changelog bringing back older values of the same key."""

from __future__ import annotations

import json

from streams.replica import Replicated


def _rec(key: str, value: object) -> tuple[bytes, bytes | None]:
    return json.dumps(key).encode(), None if value is None else json.dumps(value).encode()


def test_older_changelog_values_do_not_shadow_a_newer_local_write() -> None:
    table: dict[str, object] = {}
    routes = Replicated(table, "routes-changelog", 6)
    routes["bank-a"] = {"keys_ready": False}  # registered
    routes["bank-a"] = {"keys_ready": True}   # its keys stored, a moment later
    routes.apply(*_rec("bank-a", {"keys_ready": False}))  # the first write comes back
    assert routes["bank-a"] == {"keys_ready": True}  # an enrollment now sees the keys
    routes.apply(*_rec("bank-a", {"keys_ready": True}))
    assert routes["bank-a"] == {"keys_ready": True} and not routes.unechoed
    assert table["bank-a"] == {"keys_ready": True}  # the Faust table got both writes


def test_another_writer_s_value_wins_and_log_order_rules_after_it() -> None:
    routes = Replicated({}, "routes-changelog", 6)
    routes["bank-a"] = {"v": 1}
    routes.apply(*_rec("bank-a", {"v": 9}))  # a new owner of the partition wrote it
    assert routes["bank-a"] == {"v": 9} and not routes.unechoed
    routes.apply(*_rec("bank-a", {"v": 1}))  # later in the log: newer than 9
    assert routes["bank-a"] == {"v": 1}


def test_a_local_delete_is_not_undone_by_the_earlier_write_coming_back() -> None:
    terminals = Replicated({}, "terminals-changelog", 6)
    terminals["T1"] = {"status": "active"}
    del terminals["T1"]
    terminals.apply(*_rec("T1", {"status": "active"}))
    assert "T1" not in terminals
    terminals.apply(*_rec("T1", None))
    assert "T1" not in terminals and not terminals.unechoed


def test_records_of_keys_never_written_here_are_copied() -> None:
    keys = Replicated({}, "keys-changelog", 6)
    keys.apply(*_rec("k1", {"a": 1}))
    keys.apply(*_rec("k2", {"b": 2}))
    keys.apply(*_rec("k1", None))
    assert dict(keys) == {"k2": {"b": 2}}
    keys.apply(None, b"{}")  # a record without a key is not a table entry
    assert dict(keys) == {"k2": {"b": 2}}
