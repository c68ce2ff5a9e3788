"""The live audit's checks (``audit.follow``) fed record by record, as a follower reads them:
a clean trail gives nothing, each tampering gives the batch audit's findings (and a
cross-event one only once its grace has passed); a checkpoint resumes without re-reporting.
No broker here: ``test_follow_broker`` follows the real one."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from audit.follow import Follower, FollowOptions
from audit.keys import build_keybook
from audit.live import load_state, save_state
from audit.model import COMPLETENESS, LEDGER, REDERIVE, Finding, Record
from bench.trail import Trail
from tests.audit.conftest import pick, replace, run
from tests.audit.test_tamper_more import _omit_one_approval

Trailed = tuple[Trail, Path]
GRACE_MS = 10_000


def arrival(records: list[Record]) -> list[Record]:
    """The records as a follower reads them: each partition in offset order, the partitions
    interleaved by broker time."""
    by_tp: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for rec in records:
        by_tp[(rec.topic, rec.partition)].append(rec)
    lanes = [sorted(recs, key=lambda r: r.offset) for recs in by_tp.values()]
    return list(heapq.merge(*lanes, key=lambda r: r.timestamp_ms))


def chunks(records: list[Record], size: int = 40) -> Iterator[list[Record]]:
    for i in range(0, len(records), size):
        yield records[i:i + size]


def follower(home: Path) -> Follower:
    return Follower(FollowOptions("cardbus", home=home, grace_ms=GRACE_MS),
                    build_keybook(home, []))


def follow_all(records: list[Record], home: Path, f: Follower | None = None) -> list[Finding]:
    """Feed every record (the clock: the last record's time), then let every grace pass."""
    f = f or follower(home)
    found: list[Finding] = []
    ordered = arrival(records)
    for chunk in chunks(ordered):
        found += f.feed(chunk, chunk[-1].timestamp_ms)
    return found + f.tick(ordered[-1].timestamp_ms + 10 * GRACE_MS)


def kinds_where(findings: list[Finding]) -> set[tuple[str, str, int, int]]:
    return {(f.kind, *f.where()) for f in findings}


def test_clean_trail_follows_clean(trail_home: Trailed) -> None:
    trail, home = trail_home
    f = follower(home)
    assert follow_all(trail.records, home, f) == []
    assert f.s.counts["events"] == len(trail.records)
    assert f.s.counts["re-derived outputs matching byte for byte"] >= trail.payments
    assert f.s.counts["settlement batches"] > 0 and f.s.counts["chained decisions"] > 0
    assert f.s.platform is not None  # the platform's outputs re-derived, every payment's
    done = f.s.platform.counts
    assert done["payments re-derived"] + done[
        "payments re-derived in another order of their topics"] == trail.payments


def test_tampering_gives_the_batch_audits_findings(trail_home: Trailed) -> None:
    """A deleted decision, a flipped answer, a batch without one approval, a replayed
    request: the follower finds what the batch audit finds, at the same records (the
    platform re-derivation's included)."""
    trail, home = trail_home
    cases = []
    gone = pick(trail.records, "provider-results", "AuthorizationDecided", 25)
    cases.append(replace(trail.records, gone))
    batch, forged = _omit_one_approval(trail, home)
    cases.append(replace(trail.records, batch, forged))
    request = pick(trail.records, "payment-requests", "PaymentRequested", 7)
    cases.append(replace(trail.records, request))
    for records in cases:
        batch_findings = run(records, home).findings
        assert batch_findings
        assert kinds_where(follow_all(records, home)) == kinds_where(batch_findings)


def test_a_missing_answer_is_reported_only_after_the_grace(trail_home: Trailed) -> None:
    """A deleted decision: the chain finding comes at once, the re-derived decision that is
    not on the results topic only once the grace has passed after its request."""
    trail, home = trail_home
    gone = pick(trail.records, "provider-results", "AuthorizationDecided", 25)
    records = arrival(replace(trail.records, gone))
    f = follower(home)
    found: list[Finding] = []
    for chunk in chunks(records):
        found += f.feed(chunk, chunk[-1].timestamp_ms)
        late = [x for x in found if x.kind == REDERIVE]
        assert not late or chunk[-1].timestamp_ms >= gone.timestamp_ms + GRACE_MS - 1_000
    found += f.tick(records[-1].timestamp_ms + 10 * GRACE_MS)
    assert REDERIVE in {x.kind for x in found}


def test_batch_without_one_approval_is_found_when_the_batch_arrives(
        trail_home: Trailed) -> None:
    """Its decisions were read before it: the ledger finding comes with the batch itself."""
    trail, home = trail_home
    batch, forged = _omit_one_approval(trail, home)
    records = arrival(replace(trail.records, batch, forged))
    upto = next(i for i, r in enumerate(records) if (r.topic, r.partition, r.offset) ==
                (batch.topic, batch.partition, batch.offset))
    f = follower(home)
    found = f.feed(records[:upto + 1], records[upto].timestamp_ms)
    assert [(x.kind, x.where()) for x in found if x.kind == LEDGER] == [
        (LEDGER, (batch.topic, batch.partition, batch.offset))]


def test_checkpoint_resumes_without_reporting_again(trail_home: Trailed, tmp_path: Path) -> None:
    """Stopped half way (its state in the checkpoint file, owner-only) and resumed:
    the two halves together find exactly what one follower finds, nothing twice."""
    trail, home = trail_home
    gone = [pick(trail.records, "provider-results", "AuthorizationDecided", n)
            for n in (10, 120)]
    records = arrival([r for r in trail.records if r not in gone])
    whole = follow_all(records, home)
    assert len({x.where() for x in whole}) >= 2
    half = len(records) // 2
    first = follower(home)
    found = []
    for chunk in chunks(records[:half]):
        found += first.feed(chunk, chunk[-1].timestamp_ms)
    save_state(first.snapshot(), tmp_path / "follow.state")
    assert (tmp_path / "follow.state").stat().st_mode & 0o077 == 0
    state = load_state(tmp_path / "follow.state")
    second = Follower(FollowOptions("cardbus", home=home, grace_ms=GRACE_MS),
                      build_keybook(home, []), state)
    for chunk in chunks(records[half:]):
        found += second.feed(chunk, chunk[-1].timestamp_ms)
    found += second.tick(records[-1].timestamp_ms + 10 * GRACE_MS)
    assert sorted(map(str, found)) == sorted(map(str, whole))
    assert {x.kind for x in found} & {COMPLETENESS, REDERIVE}


def test_what_a_follower_keeps_per_event_is_bounded(trail_home: Trailed) -> None:
    """A follower runs for months: it remembers the ids and card cryptograms of the newest
    ``window`` events only. A card cryptogram replayed at the end of the trail is caught when
    its first use is within the window, and left to the batch audit when it is not."""
    from dataclasses import replace as with_

    from audit.keys import mac_sealer
    from audit.model import REPLAY
    from cardbus.crypto.signing import seal_event
    from schemas.payments import PaymentRequested
    from streams import codec

    trail, home = trail_home
    rec = pick(trail.records, "payment-requests", "PaymentRequested", 12)
    ev = codec.decode(None, rec.value)
    assert isinstance(ev, PaymentRequested) and ev.seal is not None
    sealer = mac_sealer(build_keybook(home, []), ev.seal.key_id)
    assert sealer is not None
    replayed = seal_event(ev.model_copy(update={"event_id": "f" * 32,
                                                "correlation_id": "e" * 32}), sealer)
    last = max(r.offset for r in trail.records if (r.topic, r.partition) == (
        rec.topic, rec.partition))
    extra = with_(rec, offset=last + 1, value=codec.encode(replayed),
                  timestamp_ms=max(r.timestamp_ms for r in trail.records) + 1)
    records = [*trail.records, extra]

    def replays(window: int) -> tuple[list[Finding], Follower]:
        f = Follower(FollowOptions("cardbus", home=home, grace_ms=GRACE_MS, window=window),
                     build_keybook(home, []))
        return [x for x in follow_all(records, home, f) if x.kind == REPLAY], f

    found, _ = replays(len(records))
    assert [x.where() for x in found] == [(extra.topic, extra.partition, extra.offset)]
    small = 100
    assert len(records) > 3 * small
    found, f = replays(small)
    assert found == []
    assert len(f.s.first) <= small + small // 10
    assert len(f.s.replay_first) <= small + small // 10
