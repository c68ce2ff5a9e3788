"""A simulated CardBus trail (real parties, real decisions, no broker) shared by the tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit.engine import AuditOptions, audit_records
from audit.keys import build_keybook
from audit.model import AuditReport, Record
from bench.trail import Trail, simulate
from streams import codec


@pytest.fixture(scope="session")
def trail_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trail, Path]:
    home = Path(tmp_path_factory.mktemp("audit-home"))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)  # whole ms, as the
    # broker stamps records (the platform re-derivation reads its time from them); the broker
    # refuses future timestamps
    return simulate(home, 160, timeout_every=20, cutover_every=60, start=start), home


def run(records: list[Record], home: Path, **kw: object) -> AuditReport:
    opts = AuditOptions("cardbus", home=home, workers=int(kw.pop("workers", 1)),  # type: ignore[call-overload]
                        **kw)  # type: ignore[arg-type]
    return audit_records(records, opts, build_keybook(home, []))


def replace(records: list[Record], old: Record, event: object | None = None,
            value: bytes | None = None) -> list[Record]:
    """The records with ``old`` rewritten (new event or raw value) or removed (neither)."""
    out = []
    for rec in records:
        if rec is old:
            if event is None and value is None:
                continue
            data = value if value is not None else codec.encode(event)  # type: ignore[arg-type]
            rec = dataclasses.replace(rec, value=data)
        out.append(rec)
    return out


def pick(records: list[Record], topic: str, type_: str, nth: int = 0) -> Record:
    """The ``nth`` record of ``type_`` on ``topic`` (publish order)."""
    found = [r for r in records if r.topic == topic and r.value and
             f'"type":"{type_}"'.encode() in r.value]
    return found[nth]
