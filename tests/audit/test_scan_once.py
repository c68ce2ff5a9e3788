"""The scan of a provider's recorded outputs against their re-derivation: an output whose bytes
are the re-derived ones is not decoded again, and nothing the ordinary scan would report is
lost on that path (no broker: the records are given to the engine directly)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from audit.model import HYGIENE, Record
from bench.trail import Trail
from tests.audit.conftest import pick, run

Trailed = tuple[Trail, Path]
IDENTICAL = "provider outputs identical to their re-derivation (not decoded)"


def test_identical_outputs_are_taken_from_the_re_derivation(trail_home: Trailed) -> None:
    trail, home = trail_home
    report = run(trail.records, home)
    decided = sum(1 for r in trail.records if r.topic == "provider-results")
    assert report.ok
    assert 0 < report.checks[IDENTICAL] <= decided
    assert report.checks["hash chains"] > 0  # their chain hashes came from the re-derivation


def test_no_re_derivation_decodes_every_output(trail_home: Trailed) -> None:
    trail, home = trail_home
    report = run(trail.records, home, rederive=False)
    assert report.ok
    assert report.checks[IDENTICAL] == 0


def _leaky(trail: Trail, **change: object) -> tuple[Record, list[Record]]:
    rec = pick(trail.records, "provider-results", "AuthorizationDecided", 2)
    leaky = dataclasses.replace(rec, **change)  # type: ignore[arg-type]
    return rec, [leaky if r is rec else r for r in trail.records]


def test_clear_pan_in_a_header_of_an_identical_output_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec, records = _leaky(trail, headers=(("debug", b"card 4111111111111111"),))
    report = run(records, home)
    assert [f.kind for f in report.findings if f.where() == rec_where(rec)] == [HYGIENE]


def test_clear_pan_as_the_key_of_an_identical_output_is_caught(trail_home: Trailed) -> None:
    trail, home = trail_home
    rec, records = _leaky(trail, key=b"4111111111111111")
    report = run(records, home)
    assert [f.kind for f in report.findings if f.where() == rec_where(rec)] == [HYGIENE]


def rec_where(rec: Record) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset
