"""The bench's settlement cut-over: one sealed command per partition of each provider's request
topic, each with its own event id, so each partition's closed batch has its own derived id (one
id sent to every partition made the audit report the batches as conflicting duplicates)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agents.providers.decide import derived_id
from bench.pipeline import PROVIDERS, cutover_records
from cardbus import ceremony
from cardbus.crypto.signing import verify_event
from schemas.ledger import SettlementCutoverRequested
from streams import codec
from streams.topics import provider_requests_spec


def test_each_partition_gets_its_own_sealed_cut_over(tmp_path: Path) -> None:
    ceremony.setup(tmp_path, list(PROVIDERS))
    records = cutover_records(tmp_path, "7", datetime(2026, 12, 5, 12, tzinfo=UTC))
    expected = {(provider_requests_spec(p).name, part)
                for p in PROVIDERS for part in range(provider_requests_spec(p).partitions)}
    assert {(topic, part) for topic, part, _, _ in records} == expected
    assert len(records) == len(expected)
    events = []
    for topic, _, key, value in records:
        ev = codec.decode(topic, value)
        assert isinstance(ev, SettlementCutoverRequested)
        assert key == ev.provider_id.encode() and topic == provider_requests_spec(ev.provider_id).name
        assert ev.batch_id == "bench-7"
        verifier = ceremony.provider_hsm(ev.provider_id, tmp_path).verifier
        verify_event(ev, {verifier.key_id: verifier}.get)  # the bank's own seal
        events.append(ev)
    assert len({ev.event_id for ev in events}) == len(events)
    assert len({derived_id("batch", ev.event_id) for ev in events}) == len(events)
