"""The live audit (``cardbus audit --follow``): the batch audit's checks, fed as records arrive.

Pure (no Kafka, no clock): ``Follower.feed(records, now_ms)`` takes the records read since the
last call (any topics, each partition in offset order) and the time the follower has reached
(``now_ms``: the broker time of the slowest partition, or the wall clock once caught up), and
returns the findings that are due. The checks are the batch audit's own functions, called on
the few facts each new record needs:

- per record, at once: decode, hygiene, seal and key time (``audit.scan.scan``); a decode or
  seal finding waits ``dead_letter_wait_ms`` for the dead letter that would make it "bad input
  the system refused" (listed, not a finding), as in the batch audit;
- duplicates (``checks.dedupe``), hash chains (``checks.check_chains`` on the chain's last
  decision and the new one), card cryptogram replays (``checks.check_replays``), at once;
- the platform's answer against the bank's decision (``checks.check_answers``), as soon as
  both are there;
- what needs later events (a payment without its outcome, a timeout without its reversal, an
  outcome without a request, a re-derived decision missing from the results, a recorded one
  that no request re-derives): only when ``grace_ms`` has passed since the payment's last
  event (``checks.check_completeness``, ``checks.compare_rederived``), never before;
- settlement batches (``checks.check_settlements``) once their decisions are all read (or
  the grace has passed);
- re-derivation: one ``ProviderReplayer`` per provider request partition, fed in offset order,
  its outputs compared byte for byte with the recorded ones (a byte-identical output proves its
  seal, as in the batch audit; the others are verified).

``snapshot()`` gives the whole state (``FollowState``: offsets are the caller's) that a
restarted follower resumes from: no finding is reported twice and none is lost. Memory grows
with the event ids kept for duplicate detection and the card cryptograms kept for replay
detection (~200 bytes per payment); open payments are dropped once checked and their grace
has passed twice.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from audit import checks
from audit import platform as platform_rederive
from audit.keys import KeyBook, NotCheckable, learn_from
from audit.model import ANSWER, DECODE, SEAL, Fact, Finding, Record
from audit.partial import IDENTITY_TOPICS
from audit.rederive import Output, PartitionReplay, ProviderReplayer, provider_hsm
from audit.scan import canonical, decode_record, provider_of, scan
from cardbus.errors import CardBusError
from streams import codec

GROUPED = frozenset({
    "PaymentRequested", "PaymentCompleted", "PaymentCancelled", "AuthorizationRequested",
    "AuthorizationDecided", "ReversalRequested", "ReversalCompleted", "TransitLoadConfirmed",
    "CardManagementRequested", "CardManagementCompleted"})
"""Event types the per-payment checks (completeness, answers) look at, by correlation id."""

RECENT_TIMES = 200_000  # records whose time is kept for the finding delay
_REPLAYER_STATE = ("cards", "accounts", "decided", "notes", "chain", "batch", "skipped",
                   "rejected", "verified", "purses")


@dataclass
class FollowOptions:
    """How to follow."""

    namespace: str
    home: Path | None = None  # the parties' key stores (the audit HSM)
    grace_ms: int = 10_000  # a missing answer is a finding this long after the last event
    dead_letter_wait_ms: int = 2_000  # how long a decode/seal finding waits for its dead letter
    rederive: bool = True
    # event ids (and card cryptograms) remembered for the duplicate and replay checks, newest
    # kept: a follower runs for months, so what it keeps per event is bounded (an id re-used
    # further apart than this is left to the batch audit, which sees its whole range)
    window: int = 200_000
    platform_timeout_s: float = 3.0  # the platform worker's --timeout and --load-timeout
    platform_load_timeout_s: float = 60.0


@dataclass
class _Group:
    """The facts of one payment (or card-management session) still open."""

    facts: list[Fact] = field(default_factory=list)
    due_ms: int = 0  # when the missing-answer checks run (last event + grace)
    checked: bool = False
    reported: set[tuple[str, str, int, int]] = field(default_factory=set)


@dataclass
class FollowState:
    """Everything a follower knows: what a checkpoint holds (with the read offsets)."""

    namespace: str
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read
    ed25519: dict[str, bytes] = field(default_factory=dict)
    history: Any = None  # audit.history.KeyHistory
    key_records: dict[bytes, bytes] = field(default_factory=dict)  # platform-keys changelog
    first: dict[tuple[str, str], Fact] = field(default_factory=dict)  # (topic, id) -> first
    replay_first: dict[tuple[str, int, str], Fact] = field(default_factory=dict)
    chain_last: dict[str, Fact] = field(default_factory=dict)
    chain_seq: dict[str, dict[int, Fact]] = field(default_factory=dict)  # until batched
    batches: list[Fact] = field(default_factory=list)  # waiting for their decisions
    groups: dict[str, _Group] = field(default_factory=dict)
    due: list[tuple[int, str]] = field(default_factory=list)  # heap: (when, correlation id)
    derived: dict[tuple[str, str], list[tuple[str, int, Output]]] = field(default_factory=dict)
    recorded: dict[tuple[str, str], tuple[Fact, Record]] = field(default_factory=dict)
    replayers: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    held: list[tuple[int, Finding, Record | None]] = field(default_factory=list)
    dead: set[tuple[str, int, int]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    last_finding: Finding | None = None
    platform: platform_rederive.LiveState | None = None  # the platform re-derivation's


def _keep_newest(facts: dict[Any, Fact], limit: int) -> None:
    """Forget the oldest entries beyond ``limit`` (dicts keep insertion order), a tenth at a
    time so the trimming costs O(1) per event."""
    if len(facts) > limit + limit // 10:
        for key in list(itertools.islice(facts, len(facts) - limit)):
            del facts[key]


def finding_id(namespace: str, finding: Finding) -> str:
    """A stable id of a finding: the same finding re-published after a restart has it."""
    text = f"{namespace}|{finding.kind}|{finding.topic}|{finding.partition}|{finding.offset}"
    return hashlib.sha256(text.encode()).hexdigest().upper()


class Follower:
    """The live audit's state and checks (see the module docstring)."""

    def __init__(self, options: FollowOptions, book: KeyBook,
                 state: FollowState | None = None) -> None:
        self.options = options
        self.book = book
        self.s = state or FollowState(options.namespace, history=book.history)
        if state is not None:  # resume: the keys and their history as they were
            for key_id, public in state.ed25519.items():
                book.ed25519.setdefault(key_id, public)
            book.history = state.history
            self._load_key_records(list(state.key_records.values()))
        self._replayers: dict[tuple[str, int], ProviderReplayer] = {}
        self._replayable: dict[str, bool] = {}
        self._known_keys = -1
        self._times: dict[tuple[str, int, int], int] = {}  # recent records' broker times
        self._platform: platform_rederive.LivePlatform | None = None
        if options.rederive and book.platform is not None and self._platform_key():
            self.s.platform = self.s.platform or platform_rederive.LiveState()
            self._platform = platform_rederive.LivePlatform(
                book.platform, platform_rederive.rules_for(options.platform_timeout_s,
                                                           options.platform_load_timeout_s),
                self.s.platform)

    # -- input ---------------------------------------------------------------------------

    def learn_key_records(self, items: list[tuple[bytes | None, bytes | None]]) -> None:
        """Records of the platform's key-records changelog (terminal MAC keys)."""
        values = []
        for key, value in items:
            if key is not None and value:
                self.s.key_records[key] = value
                values.append(value)
        self._load_key_records(values)

    def _load_key_records(self, values: list[bytes]) -> None:
        import json

        from cardbus.crypto.keystore import StoredKey

        if self.book.platform is None or not values:
            return
        stored = []
        for value in values:
            try:
                stored.append(StoredKey.model_validate(json.loads(value)))
            except (ValueError, TypeError):
                continue
        self.book.platform.keys.load_records(stored)
        self.book._macs.clear()  # a key version may have arrived for a MAC checked before

    def feed(self, records: list[Record], now_ms: int) -> list[Finding]:
        """Audit ``records`` (read since the last call) and return the findings now due."""
        out: list[Finding] = []
        records = sorted(records, key=lambda r: (r.topic not in IDENTITY_TOPICS, r.topic,
                                                 r.partition, r.offset))
        for rec in records:
            if rec.topic in IDENTITY_TOPICS:
                self._learn(rec)
            self.s.counts["events"] += 1
            self._times[(rec.topic, rec.partition, rec.offset)] = rec.timestamp_ms
        while len(self._times) > RECENT_TIMES:
            del self._times[next(iter(self._times))]
        self._plan()
        result = scan(records, self.book)
        self.s.counts.update({f"checked: {k}": v for k, v in result.checks.items()})
        self.s.counts.update({f"not checked: {k}": v for k, v in result.not_checked.items()})
        where = {(r.topic, r.partition, r.offset): r for r in records}
        for finding in result.findings:
            self._emit(finding, out, where.get(finding.where()))
        for fact in result.facts:
            self._fact(fact, where[fact.where()], out)
        for rec in records:
            if provider_of(rec.topic) is not None:
                self._rederive(rec, out)
        _keep_newest(self.s.first, self.options.window)
        _keep_newest(self.s.replay_first, self.options.window)
        if self._platform is not None:
            self._platform.feed(records)
        return out + self.tick(now_ms)

    # -- identities ----------------------------------------------------------------------

    def _learn(self, rec: Record) -> None:
        """Keys and key times from an identity record (``engine._learn_identities`` for one
        record: a revocation counts only when its seal verifies)."""
        try:
            event, raw = decode_record(rec)
        except CardBusError:
            return
        learn_from(self.book, event)
        if rec.topic != "key-history":
            return
        self.book.history.learn(event, rec.timestamp_ms)
        if event.type == "KeyRevoked":
            try:
                self.book.check(event, canonical(event, raw))
            except (CardBusError, NotCheckable):
                return
            self.book.history.revoke(event, rec.timestamp_ms,
                                     f"{rec.topic}/{rec.partition}@{rec.offset}")

    def _plan(self) -> None:
        """Which providers are re-derived, once their keys are known (as the batch audit's
        plan): their requests' seals are left to the replay, their byte-identical outputs
        need no second verification."""
        if len(self.book.ed25519) == self._known_keys:
            return
        self._known_keys = len(self.book.ed25519)
        self.s.ed25519 = dict(self.book.ed25519)
        for pid in list(self._replayable):
            if not self._replayable[pid]:
                del self._replayable[pid]  # its keys may be there now
        deferred = {f"provider:{pid}" for pid, ok in self._replayable.items()
                    if ok and _signs_as_registered(pid, self.options.home, self.book)}
        self.book.deferred_producers = frozenset(deferred)

    def _can_replay(self, pid: str) -> bool:
        ok = self._replayable.get(pid)
        if ok is None:
            ok = self._replayable[pid] = self._check_replayable(pid)
            if ok:
                self.book.deferred = self.book.deferred | {f"provider.{pid}.requests"}
                self._known_keys = -1  # recompute the deferred producers
        return ok

    def _check_replayable(self, pid: str) -> bool:
        if not self.options.rederive or self._platform_key() is None:
            return False
        from agents.providers.base import discover

        adapter = discover().get(pid)
        if adapter is None or not adapter.replayable:
            return False
        try:
            provider_hsm(pid, self.options.home)
        except CardBusError:
            return False
        return True

    def _platform_key(self) -> str | None:
        return next((k for k in self.book.ed25519 if k.startswith("sign:platform.")), None)

    # -- facts ---------------------------------------------------------------------------

    def _fact(self, f: Fact, rec: Record, out: list[Finding]) -> None:
        key = (f.topic, f.event_id)
        seen = self.s.first.get(key)
        if seen is not None:
            _unique, found, redelivered = checks.dedupe([seen, f])
            self.s.counts["redelivered duplicates"] += redelivered
            for finding in found:
                self._emit(finding, out)
            if found and f.seal_deferred:  # a second content under one id: verify it
                self._verify(rec, out)
            return
        self.s.first[key] = f._replace(data={})
        t = f.type
        if t == "EventDeadLettered":
            d = f.data
            original = d["original_topic"].removeprefix(self.options.namespace + ".")
            self.s.dead.add((original, d["original_partition"], d["original_offset"]))
        if t == "PaymentRequested":
            self._replay_check(f, out)
        if t == "AuthorizationDecided" and f.topic == checks.RESULTS:
            self._chain(f, out)
        if t == "SettlementBatchClosed":
            self.s.batches.append(f)
        pid = f.data.get("provider_id") or f.data.get("operator_id")
        if (t in checks.REDERIVED_TYPES and f.topic in (checks.RESULTS, checks.SETTLEMENTS)
                and pid and self._can_replay(pid)):
            self.s.recorded[key] = (f, rec)
        elif f.seal_deferred:
            self._verify(rec, out)
        if t in GROUPED:
            group = self.s.groups.setdefault(f.correlation_id, _Group())
            group.facts.append(f)
            due = max(group.due_ms, f.timestamp_ms + self.options.grace_ms)
            if due != group.due_ms or group.checked:
                heapq.heappush(self.s.due, (due, f.correlation_id))
            group.due_ms, group.checked = due, False
            if t in ("AuthorizationDecided", "PaymentCompleted"):
                self._answers(group, out)

    def _replay_check(self, f: Fact, out: list[Finding]) -> None:
        d = f.data
        key = (d["pan_token"], d["atc"], d["arqc"])
        first = self.s.replay_first.get(key)
        if first is None:
            self.s.replay_first[key] = f._replace(data={k: d[k] for k in
                                                        ("pan_token", "atc", "arqc")})
            return
        for finding in checks.check_replays([first, f]):
            self._emit(finding, out)

    def _chain(self, f: Fact, out: list[Finding]) -> None:
        chain_id = f.data["chain_id"]
        last = self.s.chain_last.get(chain_id)
        window = checks.Window(0, 0, partial=last is not None)
        found, _n = checks.check_chains([last, f] if last is not None else [f], window)
        for finding in found:
            if finding.where() == f.where():
                self._emit(finding, out)
        self.s.chain_last[chain_id] = f
        self.s.chain_seq.setdefault(chain_id, {}).setdefault(f.data["sequence"], f)
        self.s.counts["chained decisions"] += 1

    def _answers(self, group: _Group, out: list[Finding]) -> None:
        decisions = [f for f in group.facts if f.type == "AuthorizationDecided"
                     and f.topic == checks.RESULTS]
        completed = [f for f in group.facts if f.type == "PaymentCompleted"]
        if decisions and completed:
            for finding in checks.check_answers(decisions, completed):
                self._emit(finding, out, group=group)

    # -- re-derivation -------------------------------------------------------------------

    def _replayer(self, pid: str, partition: int) -> ProviderReplayer | None:
        replayer = self._replayers.get((pid, partition))
        if replayer is None:
            from agents.providers.base import discover

            platform_key = self._platform_key()
            platform = self.book.verifier(platform_key) if platform_key else None
            if platform is None:
                return None
            saved = self.s.replayers.get((pid, partition), {})
            replayer = ProviderReplayer(discover()[pid], provider_hsm(pid, self.options.home),
                                        platform, partition, **saved)
            self._replayers[(pid, partition)] = replayer
        return replayer

    def _rederive(self, rec: Record, out: list[Finding]) -> None:
        pid = provider_of(rec.topic)
        if pid is None or not self._can_replay(pid):
            return
        replayer = self._replayer(pid, rec.partition)
        if replayer is None:
            return
        try:
            ev, _raw = decode_record(rec)
        except CardBusError:
            replayer.rejected += 1
            return
        failures = len(replayer.seal_failures)
        outputs = replayer.apply(ev, rec.timestamp_ms)
        for reason in replayer.seal_failures[failures:]:
            self._emit(Finding(SEAL, rec.topic, rec.partition, rec.offset, reason), out, rec)
        del replayer.seal_failures[:]
        for topic, event in outputs:
            data = codec.encode(event)
            output = Output(topic, event.type, event.event_id, data,
                            hashlib.sha256(data).hexdigest(), rec.offset, rec.timestamp_ms)
            self.s.derived.setdefault((topic, event.event_id), []).append(
                (pid, rec.partition, output))

    def _compare(self, now_ms: int, out: list[Finding]) -> None:
        """Re-derived outputs against recorded ones: a pair at once, a lone one after the
        grace (``checks.compare_rederived`` on what is ready)."""
        window = checks.Window(now_ms, self.options.grace_ms)
        ready_derived: dict[tuple[str, int], list[Output]] = defaultdict(list)
        ready_recorded: dict[tuple[str, str], Fact] = {}
        raw: dict[tuple[str, int, int], bytes | None] = {}
        records: dict[tuple[str, str], Record] = {}
        for key, outputs in list(self.s.derived.items()):
            pair = self.s.recorded.get(key)
            if pair is None and not window.overdue_ms(outputs[0][2].source_timestamp_ms):
                continue
            for pid, partition, output in outputs:
                ready_derived[(pid, partition)].append(output)
            del self.s.derived[key]
            if pair is not None:
                ready_recorded[key] = pair[0]
                records[key] = pair[1]
                raw[pair[0].where()] = pair[1].value
                del self.s.recorded[key]
        for key, (fact, rec) in list(self.s.recorded.items()):
            if window.overdue(fact):
                ready_recorded[key], records[key] = fact, rec
                raw[fact.where()] = rec.value
                del self.s.recorded[key]
        if not ready_derived and not ready_recorded:
            return
        replays = [PartitionReplay(pid, p, outputs=outs) for (pid, p), outs in
                   ready_derived.items()]
        lone = {f.data.get("provider_id") or f.data.get("operator_id")
                for f in ready_recorded.values()} - {
            r.provider_id for r in replays}
        replays += [PartitionReplay(str(pid), -1) for pid in lone]
        found, matched = checks.compare_rederived(replays, ready_recorded, raw, window)
        self.s.counts["re-derived outputs matching byte for byte"] += len(matched)
        for finding in found:
            self._emit(finding, out)
        for key, fact in ready_recorded.items():
            if not fact.seal_deferred:
                continue
            if matched.get(key) == fact.digest:
                self.s.counts["provider seals proven by the byte-identical re-derivation"] += 1
            else:
                self._verify(records[key], out)

    def _verify(self, rec: Record, out: list[Finding]) -> None:
        """Verify the seal of a provider output the scan left to the re-derivation."""
        result = scan([rec], replace(self.book, deferred_producers=frozenset()))
        for finding in result.findings:
            if finding.kind == SEAL:
                self._emit(finding, out, rec)

    # -- time ----------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Finding]:
        """The findings that became due by ``now_ms`` (nothing new read)."""
        out: list[Finding] = []
        self._compare(now_ms, out)
        self._settlements(now_ms, out)
        self._groups(now_ms, out)
        self._platform_due(now_ms, out)
        self._release(now_ms, out)
        return out

    def _platform_due(self, now_ms: int, out: list[Finding]) -> None:
        """The platform re-derivation of the payments whose grace has passed; a finding at
        an answer the ``answer`` check found is left out (as in the batch audit)."""
        if self._platform is None:
            return
        for cid, finding in self._platform.due(now_ms, self.options.grace_ms):
            group = self.s.groups.get(cid)
            if group is not None and (ANSWER, *finding.where()) in group.reported:
                continue
            self._emit(finding, out)

    def _settlements(self, now_ms: int, out: list[Finding]) -> None:
        waiting = []
        for b in self.s.batches:
            d = b.data
            chain_id = f"{d['provider_id']}.{d['batch_id'].rsplit('.', 1)[-1]}"
            chain = self.s.chain_seq.get(chain_id, {})
            covered = [chain.get(s) for s in range(d["first_sequence"], d["last_sequence"] + 1)]
            complete = all(c is not None for c in covered)
            if not complete and b.timestamp_ms + self.options.grace_ms > now_ms:
                waiting.append(b)
                continue
            found = checks.check_settlements([c for c in covered if c is not None], [b])
            for finding in found:
                self._emit(finding, out)
            self.s.counts["settlement batches"] += 1
            if complete:
                for s in range(d["first_sequence"], d["last_sequence"] + 1):
                    chain.pop(s, None)
        self.s.batches = waiting

    def _groups(self, now_ms: int, out: list[Finding]) -> None:
        """The payments whose grace has passed (a heap by due time: stale entries, left by a
        later event of the payment, are skipped)."""
        window = checks.Window(now_ms, self.options.grace_ms)
        linger = 2 * self.options.grace_ms
        while self.s.due and self.s.due[0][0] <= now_ms:
            when, cid = heapq.heappop(self.s.due)
            group = self.s.groups.get(cid)
            if group is None or when not in (group.due_ms, group.due_ms + linger):
                continue
            if not group.checked:
                by_type: dict[str, list[Fact]] = defaultdict(list)
                for f in group.facts:
                    by_type[f.type].append(f)
                found, counts = checks.check_completeness(by_type, self.s.dead, window)
                for finding in found:
                    self._emit(finding, out, group=group)
                group.checked = True
                self.s.counts["payments"] += counts.get("payments", 0)
                heapq.heappush(self.s.due, (group.due_ms + linger, cid))
            elif when == group.due_ms + linger:
                del self.s.groups[cid]  # checked, and nothing came for twice the grace

    def _release(self, now_ms: int, out: list[Finding]) -> None:
        keep = []
        for release_ms, finding, rec in self.s.held:
            if release_ms > now_ms:
                keep.append((release_ms, finding, rec))
                continue
            if finding.where() in self.s.dead:
                self.s.counts["dead-lettered records (bad input the system refused)"] += 1
                continue
            if rec is not None and "unknown signing key" in finding.reason:
                # the key may have been read since (its registration on another topic)
                again = scan([rec], replace(self.book, deferred_producers=frozenset(),
                                            deferred=frozenset()))
                for f in again.findings:
                    if f.kind == SEAL:
                        self._report(f, out)
                continue
            self._report(finding, out)
        self.s.held = keep

    # -- output --------------------------------------------------------------------------

    def _emit(self, finding: Finding, out: list[Finding], rec: Record | None = None,
              group: _Group | None = None) -> None:
        if finding.kind in (DECODE, SEAL):
            at = rec.timestamp_ms if rec is not None else 0
            self.s.held.append((at + self.options.dead_letter_wait_ms, finding, rec))
            return
        if group is not None:
            key = (finding.kind, *finding.where())
            if key in group.reported:
                return
            group.reported.add(key)
        self._report(finding, out)

    def _report(self, finding: Finding, out: list[Finding]) -> None:
        self.s.counts["findings"] += 1
        self.s.counts[f"findings: {finding.kind}"] += 1
        self.s.last_finding = finding
        out.append(finding)

    def record_time(self, finding: Finding) -> int | None:
        """The broker time of a finding's record, if it was read recently (for the delay
        from record to finding)."""
        return self._times.get(finding.where())

    def snapshot(self) -> FollowState:
        """The state to checkpoint (the caller sets ``offsets``)."""
        for key, replayer in self._replayers.items():
            self.s.replayers[key] = {name: getattr(replayer, name) for name in _REPLAYER_STATE}
        self.s.history = self.book.history
        self.s.ed25519 = dict(self.book.ed25519)
        return self.s


def _signs_as_registered(pid: str, home: Path | None, book: KeyBook) -> bool:
    signer = provider_hsm(pid, home).signer
    return book.ed25519.get(signer.key_id) == signer.public_bytes()


__all__ = ["FollowOptions", "FollowState", "Follower", "finding_id"]
