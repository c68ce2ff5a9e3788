"""Re-derivation of the trusted platform: replay its inputs through its own handlers, compare
what they send with what it recorded.

The platform's handlers (``agents.platform.handlers.Platform``) run here as in the app, over
dict tables and a send that collects, with the audit's platform HSM (the local key store and
the ``platform-keys`` changelog: ``audit.keys.build_keybook``). Per payment partition, the
inputs are the partition of ``payment-requests`` (requests, cancellations, clock ticks, issuer
script results), of ``provider-results`` (decisions, operator answers) and of ``transit-loads``,
merged by broker time; the global state (routes and terminal status) follows the identity
topics in time. One partition holds whole payments, and the platform's pending state is one
record per payment, so each payment (correlation id) is compared on its own: the outputs its
inputs give against the platform outputs recorded with its correlation id on
``terminal-results`` and the provider request topics.

The platform consumes three topics, so the order it took two records of one payment on two
topics (a decision and the tick that timed it out; a decision and the terminal's cancel) is
not on the trail. The broker-time order is tried first; a payment it does not explain is
replayed alone in the other orders of its records (each topic's records kept in their order,
the partition's due clock ticks with the payment's own requests); one that gives exactly the
recorded outputs explains it. Only a payment no order explains has findings.

Fresh encryptions (the PAN re-encrypted and the PIN block translated to the provider's keys,
random nonces) cannot be re-derived byte for byte: a forwarded ``AuthorizationRequested`` is
compared without them (and without its seal, which covers them and is verified by the scan or
the provider's re-derivation), and they are checked by decrypting both sides in the audit HSM
(same PAN, same PIN, bound to the payment id).

``LivePlatform`` does the same for ``cardbus audit --follow``: records fed as they arrive,
each payment compared once its grace has passed since its last record (and the platform waits
on it no more: a deadline, a parked decision).

Not re-derived: the terminals' key sets (fresh wrapping keys; a terminal's status is taken from
the platform's recorded ``TerminalKeysIssued``), card management, dead letters.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import structlog

from agents.platform import admission, decide, handlers
from agents.platform.handlers import Platform, PlatformRules, PlatformTables
from audit.checks import diff as _diff
from audit.model import PLATFORM, Finding, Record
from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.signing import verify_event
from cardbus.errors import CardBusError
from schemas.base import Event
from schemas.payments import AuthorizationRequested, PaymentRequested
from schemas.providers import ProviderAdmitted, ProviderKeysProvisioned, ProviderRegistered
from schemas.terminals import TerminalEnrolled, TerminalKeysIssued
from streams import codec
from streams.topics import NAMESPACE

INPUT_TOPICS = ("payment-requests", "provider-results", "transit-loads")
"""The platform's payment inputs, per partition, in the order of a tie in broker time."""
GLOBAL_TOPICS = ("provider-admissions", "providers", "provider-keys", "terminals",
                 "key-history")
"""What the routes and the terminals' status come from (read whole by every partition)."""
OUTPUT_TYPES = frozenset({
    "PaymentCompleted", "AuthorizationRequested", "ReversalRequested", "TransitLoadRequested",
    "TransitLoadApplied", "TransitLoadAborted", "TransitLoadAuthorized", "TransitLoadConfirmed",
    "IssuerScriptReported"})
"""The platform's payment outputs that are compared (on ``terminal-results`` and the provider
request topics, produced by the platform)."""
MAX_ORDERS = 720
"""At most this many orders of one payment's records are tried."""


def output_topic(topic: str) -> bool:
    return topic == "terminal-results" or (topic.startswith("provider.")
                                           and topic.endswith(".requests"))


class Recorded(NamedTuple):
    """A platform output as recorded."""

    record: Record
    type: str
    event_id: str
    correlation_id: str


def index_recorded(records: Iterable[Record]) -> dict[str, list[Recorded]]:
    """The recorded platform outputs (``OUTPUT_TYPES`` by the platform on the output topics)
    by correlation id, in offset order per topic."""
    out: dict[str, list[Recorded]] = defaultdict(list)
    for rec in records:
        if not output_topic(rec.topic) or not rec.value:
            continue
        try:
            d = json.loads(rec.value)
        except ValueError:
            continue  # the scan reports it
        if (isinstance(d, dict) and d.get("type") in OUTPUT_TYPES
                and d.get("producer") == "platform"):
            out[str(d.get("correlation_id"))].append(
                Recorded(rec, d["type"], str(d.get("event_id")), str(d.get("correlation_id"))))
    return out


class Derived(NamedTuple):
    """An output the platform's handlers give for the recorded inputs."""

    topic: str
    event: Event
    data: bytes
    source: Record  # the input that caused it


class _Msg(NamedTuple):
    """A record as the handlers read it (``streams.records.Record``)."""

    value: bytes | None
    partition: int
    timestamp: float


class _Replaying(Platform):
    """The platform's handlers with the global state set from outside and nothing but payment
    outputs sent (no key sets: their wrapping is fresh)."""

    async def send_keys(self, terminal_id: str, event: Event) -> None:
        del terminal_id, event

    async def reissue_terminal_keys(self, cause: Event) -> None:
        del cause


@dataclass
class GlobalState:
    """Routes and terminal records, as the platform had them, from the identity topics in
    time order (copied on change: a payment keeps the state of its time)."""

    platform_verifier: Any
    admitted: bool = False  # the trail holds admissions: routes need them
    routes: dict[str, Any] = field(default_factory=dict)
    terminals: dict[str, Any] = field(default_factory=dict)
    admissions: dict[str, ProviderAdmitted] = field(default_factory=dict)
    parked_keys: dict[str, ProviderKeysProvisioned] = field(default_factory=dict)
    waiting: dict[str, ProviderRegistered] = field(default_factory=dict)
    enrolled: dict[str, TerminalEnrolled] = field(default_factory=dict)
    status: dict[str, Literal["active", "suspended"]] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the platform's verifier (its owner sets it again)."""
        return {**self.__dict__, "platform_verifier": None}

    def apply(self, rec: Record) -> None:
        try:
            ev = codec.decode(None, rec.value)
        except CardBusError:
            return
        try:
            self._apply(ev)
        except CardBusError:
            return  # the platform refused it too (dead letter)

    def _apply(self, ev: Event) -> None:
        if isinstance(ev, ProviderAdmitted):
            self.admissions[ev.provider_id] = admission.admit_provider(
                ev, self.admissions, self.platform_verifier)
            waiting = self.waiting.pop(ev.provider_id, None)
            if waiting is not None:
                self._register(waiting)
        elif isinstance(ev, ProviderRegistered):
            if self.admitted and ev.provider_id not in self.admissions:
                self.waiting[ev.provider_id] = ev
                return
            self._register(ev)
        elif isinstance(ev, ProviderKeysProvisioned):
            raw = self.routes.get(ev.provider_id)
            if raw is None:
                self.parked_keys[ev.provider_id] = ev
                return
            self._keys(ev, decide.Route.model_validate(raw))
        elif isinstance(ev, TerminalEnrolled):
            self.enrolled.setdefault(ev.terminal_id, ev)
            self._terminal(ev.terminal_id)
        elif isinstance(ev, TerminalKeysIssued) and ev.producer == "platform":
            self.status[ev.terminal_id] = ev.status
            self._terminal(ev.terminal_id)

    def _terminal(self, terminal_id: str) -> None:
        """The terminal's record once its enrollment and a key set are known (a live audit
        may read either topic first)."""
        enrolled, status = self.enrolled.get(terminal_id), self.status.get(terminal_id)
        if enrolled is None or status is None:
            return
        self.terminals = {**self.terminals, terminal_id: decide.TerminalRecord(
            terminal_id=terminal_id, status=status,
            identity_key_id=enrolled.identity_key_id,
            identity_public_key=enrolled.identity_public_key,
            wrap_public_key=enrolled.wrap_public_key).model_dump(mode="json")}

    def _register(self, ev: ProviderRegistered) -> None:
        raw = self.routes.get(ev.provider_id)
        current = decide.Route.model_validate(raw) if raw else None
        if self.admitted:
            others = {k: decide.Route.model_validate(v) for k, v in self.routes.items()
                      if k != ev.provider_id}
            route = admission.register_admitted(ev, current,
                                                admission=self.admissions.get(ev.provider_id),
                                                routes=others)
        else:  # a trail without admissions: a platform that trusts on first use
            route = decide.register_provider(ev, current)
        self.routes = {**self.routes, ev.provider_id: route.model_dump(mode="json")}
        parked = self.parked_keys.pop(ev.provider_id, None)
        if parked is not None:
            self._keys(parked, route)

    def _keys(self, ev: ProviderKeysProvisioned, route: decide.Route) -> None:
        """The keys are in the audit's key store already (the changelog): only their seal
        and the route's readiness are replayed."""
        verify_event(ev, lambda kid: route.verifier() if kid == route.identity_key_id else None)
        ready = route.model_copy(update={"keys_ready": True})
        self.routes = {**self.routes, ev.provider_id: ready.model_dump(mode="json")}


@dataclass
class PlatformCheck:
    """What the platform re-derivation of one partition gave."""

    partition: int
    findings: list[Finding] = field(default_factory=list)
    payments: set[str] = field(default_factory=set)  # correlation ids re-derived
    counts: Counter[str] = field(default_factory=Counter)


def _sort_key(rec: Record) -> tuple[int, int, int]:
    rank = GLOBAL_TOPICS.index(rec.topic) if rec.topic in GLOBAL_TOPICS else (
        len(GLOBAL_TOPICS) + INPUT_TOPICS.index(rec.topic))
    return rec.timestamp_ms, rank, rec.offset


def _event_of(rec: Record) -> Event | None:
    try:
        return codec.decode(None, rec.value)
    except CardBusError:
        return None


class PlatformReplayer:
    """The platform's handlers over one payment partition's inputs."""

    def __init__(self, hsm: PlatformHsm, rules: PlatformRules, partition: int,
                 admitted: bool) -> None:
        self.hsm, self.rules, self.partition = hsm, rules, partition
        self.state = GlobalState(hsm.verifier, admitted)

    def platform(self, routes: dict[str, Any], terminals: dict[str, Any]
                 ) -> tuple[Platform, list[tuple[str, Event]]]:
        sent: list[tuple[str, Event]] = []

        async def send(topic: str, key: str | None, event: Event) -> None:
            del key
            sent.append((topic.removeprefix(NAMESPACE + "."), event))

        tables = PlatformTables(routes=routes, terminals=terminals)
        return _Replaying(tables, self.hsm, None, send, self.rules), sent  # type: ignore[arg-type]

    def run(self, platform: Platform, sent: list[tuple[str, Event]], rec: Record
            ) -> list[Derived]:
        """Feed one input record; the outputs it gave."""
        handler = {"payment-requests": platform.on_request,
                   "provider-results": platform.on_result,
                   "transit-loads": platform.on_load}[rec.topic]
        start = len(sent)
        _run(handler(_Msg(rec.value, rec.partition, rec.timestamp_ms / 1000)))
        out = []
        for topic, event in sent[start:]:
            if event.type in OUTPUT_TYPES and output_topic(topic):
                out.append(Derived(topic, event, codec.encode(event), rec))
        return out



def _run(step: Coroutine[Any, Any, None]) -> None:
    """Run a handler to its end without an event loop (the audit may run inside one): with a
    send that only collects, it never waits. Whatever it raises is a refusal (the app
    dead-letters it: ``streams.faust_support``)."""
    try:
        step.send(None)
    except StopIteration:
        return
    except Exception:  # noqa: BLE001 - the app dead-letters every exception of a handler
        return
    step.close()
    raise RuntimeError("a platform handler waited on something during the audit's replay")


def _drop(_logger: Any, _name: str, _event: Any) -> Any:
    raise structlog.DropEvent


@contextmanager
def _quiet() -> Iterator[None]:
    """The handlers' log lines dropped while they replay (the app logged them once)."""
    saved = handlers.log
    handlers.log = structlog.wrap_logger(None, processors=[_drop])
    try:
        yield
    finally:
        handlers.log = saved


def check_partition(hsm: PlatformHsm, rules: PlatformRules, partition: int,
                    inputs: list[Record], global_records: list[Record],
                    recorded: dict[str, list[Recorded]], end_ms: int, grace_ms: int,
                    admitted: bool) -> PlatformCheck:
    """Re-derive one payment partition (``inputs``: its records of ``INPUT_TOPICS``; the
    identity records in ``global_records``) and compare each payment with ``recorded``."""
    with _quiet():
        return _check_partition(hsm, rules, partition, inputs, global_records, recorded,
                                end_ms, grace_ms, admitted)


def _check_partition(hsm: PlatformHsm, rules: PlatformRules, partition: int,
                     inputs: list[Record], global_records: list[Record],
                     recorded: dict[str, list[Recorded]], end_ms: int, grace_ms: int,
                     admitted: bool) -> PlatformCheck:
    result = PlatformCheck(partition)
    replayer = PlatformReplayer(hsm, rules, partition, admitted)
    platform, sent = replayer.platform({}, {})
    derived: dict[str, list[Derived]] = defaultdict(list)
    requests: dict[str, PaymentRequested] = {}
    group_inputs: dict[str, list[Record]] = defaultdict(list)
    snapshot: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    ticks: list[tuple[Record, datetime]] = []
    for rec in sorted([*global_records, *inputs], key=_sort_key):
        if rec.topic in GLOBAL_TOPICS:
            replayer.state.apply(rec)
            platform.t.routes = replayer.state.routes
            platform.t.terminals = replayer.state.terminals
            continue
        ev = _event_of(rec)
        if ev is not None:
            if isinstance(ev, PaymentRequested):
                requests.setdefault(ev.event_id, ev)
            if ev.type == "ClockTicked":
                ticks.append((rec, ev.occurred_at))
            else:
                group_inputs[ev.correlation_id].append(rec)
                snapshot.setdefault(ev.correlation_id, (replayer.state.routes,
                                                        replayer.state.terminals))
        for out in replayer.run(platform, sent, rec):
            derived[out.event.correlation_id].append(out)
    for cid in sorted(set(group_inputs) | set(derived)):
        result.payments.add(cid)
        found, matched = _compare(derived.get(cid, []), recorded.get(cid, []), hsm,
                                  requests, end_ms, grace_ms)
        if not found:
            result.counts["payments re-derived"] += 1
            continue
        if cid in group_inputs:
            other = _other_orders(replayer, cid, group_inputs[cid], ticks, snapshot[cid],
                                  recorded.get(cid, []), requests, end_ms, grace_ms)
            if other is not None and not other[0]:
                result.counts["payments re-derived in another order of their topics"] += 1
                continue
            if other is not None and (len(other[0]), -other[1]) < (len(found), -matched):
                found = other[0]  # the order that explains the most
        result.findings += found
    return result


def _other_orders(replayer: PlatformReplayer, cid: str, inputs: list[Record],
                  ticks: list[tuple[Record, datetime]],
                  state: tuple[dict[str, Any], dict[str, Any]], recorded: list[Recorded],
                  requests: dict[str, PaymentRequested], end_ms: int, grace_ms: int
                  ) -> tuple[list[Finding], int] | None:
    """The findings (and how many outputs were identical) of the other order of the payment's
    records (and of the clock ticks that may time it out) that explains the recorded outputs
    best: no finding if one gives exactly them (None: no order was tried)."""
    first = min(r.timestamp_ms for r in inputs)
    rules = replayer.rules
    horizon = max(r.timestamp_ms for r in inputs) + int(
        (rules.load_timeout + rules.park_grace + rules.timeout).total_seconds() * 1000)
    due = [t for t, at in ticks if first <= t.timestamp_ms <= horizon]
    # the ticks between two of the payment's own requests: the first and the last of each
    # run (a record of another topic taken before, between or after them)
    own = sorted(r.offset for r in inputs if r.topic == "payment-requests")
    runs: dict[int, list[Record]] = defaultdict(list)
    for t in due:
        runs[sum(1 for o in own if o < t.offset)].append(t)
    kept = {r.offset: r for run in runs.values() for r in (run[0], run[-1])}
    streams = {topic: sorted([r for r in inputs if r.topic == topic], key=lambda r: r.offset)
               for topic in INPUT_TOPICS}
    streams["payment-requests"] = sorted([*streams["payment-requests"], *kept.values()],
                                         key=lambda r: r.offset)
    best: tuple[list[Finding], int] | None = None
    for order in itertools.islice(_interleavings([s for s in streams.values() if s]),
                                  MAX_ORDERS):
        platform, sent = replayer.platform(*state)
        derived = [d for rec in order for d in replayer.run(platform, sent, rec)
                   if d.event.correlation_id == cid]
        found = _compare(derived, recorded, replayer.hsm, requests, end_ms, grace_ms)
        if best is None or (len(found[0]), -found[1]) < (len(best[0]), -best[1]):
            best = found
        if not best[0]:
            break
    return best


def _interleavings(streams: list[list[Record]]) -> Iterator[list[Record]]:
    """Every merge of ``streams`` that keeps each one's order."""
    if sum(len(s) for s in streams) == 0:
        yield []
        return
    for i, s in enumerate(streams):
        if not s:
            continue
        rest = [*streams[:i], s[1:], *streams[i + 1:]]
        for tail in _interleavings(rest):
            yield [s[0], *tail]


def compare(derived: list[Derived], recorded: list[Recorded], hsm: PlatformHsm,
            requests: dict[str, PaymentRequested], end_ms: int, grace_ms: int
            ) -> list[Finding]:
    """One payment's re-derived outputs against its recorded ones: a finding per recorded
    output that differs (or answers in place of another one), per missing one (at the input
    that should have caused it, once it is overdue) and per extra one."""
    return _compare(derived, recorded, hsm, requests, end_ms, grace_ms)[0]


def _compare(derived: list[Derived], recorded: list[Recorded], hsm: PlatformHsm,
             requests: dict[str, PaymentRequested], end_ms: int, grace_ms: int
             ) -> tuple[list[Finding], int]:
    """``compare``, and how many outputs were identical."""
    matched = 0
    mine: dict[tuple[str, str], Derived] = {}
    for d in derived:
        mine.setdefault((d.topic, d.event.event_id), d)
    theirs: dict[tuple[str, str], Recorded] = {}
    for r in recorded:
        theirs.setdefault((r.record.topic, r.event_id), r)
    findings: list[Finding] = []
    missing: list[Derived] = []
    for key, d in mine.items():
        if key not in theirs:
            missing.append(d)
            continue
        r = theirs.pop(key)
        problem = _differs(d, r, hsm, requests)
        matched += not problem
        if problem:
            findings.append(_at(r.record, f"recorded {r.type} {r.event_id} differs from its "
                                          f"re-derivation: {problem}"))
    extra = list(theirs.values())
    for d in missing:
        twin = next((r for r in extra if r.type == d.event.type), None)
        if twin is not None:
            extra.remove(twin)
            where = "" if twin.record.topic == d.topic else f" (on {twin.record.topic}, " \
                                                             f"re-derived on {d.topic})"
            findings.append(_at(twin.record, (
                f"recorded {twin.type} {twin.event_id} is not what the platform's inputs "
                f"give{where}: {_diff(twin.record.value, d.data)}")))
        elif d.source.timestamp_ms + grace_ms <= end_ms:
            findings.append(_at(d.source, (
                f"the platform's {d.event.type} {d.event.event_id} to {d.topic} that this "
                f"input re-derives is not recorded (removed?)")))
    for r in extra:
        findings.append(_at(r.record, (
            f"recorded {r.type} {r.event_id} is not re-derived from any recorded input of "
            f"payment {r.correlation_id} (forged, or its cause was removed)")))
    return findings, matched


def _at(rec: Record, reason: str) -> Finding:
    return Finding(PLATFORM, rec.topic, rec.partition, rec.offset, reason)


_FRESH = ("seal", "card.pan_encrypted", "pin_block")


def _differs(d: Derived, r: Recorded, hsm: PlatformHsm,
             requests: dict[str, PaymentRequested]) -> str | None:
    if r.record.value == d.data:
        return None
    if not isinstance(d.event, AuthorizationRequested):
        return _diff(r.record.value, d.data)
    try:
        theirs = json.loads(r.record.value or b"")
        mine = json.loads(d.data)
    except ValueError:
        return "recorded bytes are not JSON"
    a, b = _without_fresh(theirs), _without_fresh(mine)
    if a != b:
        return _diff(json.dumps(a).encode(), json.dumps(b).encode())
    request = requests.get(d.event.request_event_id)
    recorded = AuthorizationRequested.model_validate(theirs)
    if request is None:
        return "its payment request is not on the trail"
    pin = None
    if request.pin_block is not None and request.pin_key_id is not None:
        if recorded.pin_block is None or recorded.pin_key_id is None:
            return "the PIN block was dropped"
        pin = (request.pin_key_id, bytes.fromhex(request.pin_block), recorded.pin_key_id,
               bytes.fromhex(recorded.pin_block))
    elif recorded.pin_block is not None:
        return "a PIN block the terminal did not send"
    if not hsm.same_translation(request.terminal_id, request.card.pan_encrypted,
                                request.correlation_id, recorded.provider_id,
                                recorded.card.pan_encrypted, pin):
        return ("its encrypted PAN or PIN block does not decrypt to the terminal's (under "
                f"{recorded.provider_id}'s keys, bound to payment {request.correlation_id})")
    return None


def _without_fresh(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k not in ("seal", "pin_block")}
    out["card"] = {k: v for k, v in d.get("card", {}).items() if k != "pan_encrypted"}
    return out


def rules_for(timeout_s: float, load_timeout_s: float) -> PlatformRules:
    """The platform's timing rules (its worker's ``--timeout`` and ``--load-timeout``)."""
    return PlatformRules(timeout=timedelta(seconds=timeout_s),
                         load_timeout=timedelta(seconds=load_timeout_s))


__all__ = ["GlobalState", "PlatformCheck", "PlatformReplayer", "check_partition", "compare",
           "index_recorded"]


# ---------------------------------------------------------------------------------------------
# live (``cardbus audit --follow``)


@dataclass
class LivePayment:
    """One payment's records while the follower waits for its grace to pass."""

    inputs: list[Record] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
    recorded: list[Recorded] = field(default_factory=list)
    state: tuple[dict[str, Any], dict[str, Any]] | None = None  # routes, terminals
    last_ms: int = 0


@dataclass
class LiveState:
    """The live platform re-derivation's whole state (in the follower's checkpoint)."""

    routes: GlobalState | None = None
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # partition -> table
    ticks: dict[int, list[tuple[Record, datetime]]] = field(default_factory=dict)
    payments: dict[str, LivePayment] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # payments checked -> when (a while)
    counts: Counter[str] = field(default_factory=Counter)


class LivePlatform:
    """``check_partition`` fed as records arrive: each payment compared once its grace has
    passed since its last record (its inputs and its recorded outputs)."""

    def __init__(self, hsm: PlatformHsm, rules: PlatformRules, state: LiveState) -> None:
        self.hsm, self.rules, self.s = hsm, rules, state
        if state.routes is None:  # admissions on the trail: routes wait for them (below)
            state.routes = GlobalState(hsm.verifier, admitted=False)
        state.routes.platform_verifier = hsm.verifier
        self.replayer = PlatformReplayer(hsm, rules, -1, state.routes.admitted)
        self.replayer.state = state.routes
        self._platforms: dict[int, tuple[Platform, list[tuple[str, Event]]]] = {}

    def _platform(self, partition: int) -> tuple[Platform, list[tuple[str, Event]]]:
        got = self._platforms.get(partition)
        if got is None:
            routes = self.s.routes
            assert routes is not None
            got = self._platforms[partition] = self.replayer.platform(routes.routes,
                                                                      routes.terminals)
            got[0].t.pending = self.s.pending.setdefault(partition, {})
        return got

    def feed(self, records: list[Record]) -> None:
        routes = self.s.routes
        assert routes is not None
        with _quiet():
            for rec in sorted(records, key=_live_key):
                if rec.topic in GLOBAL_TOPICS:
                    if rec.topic == "provider-admissions":
                        routes.admitted = True
                    routes.apply(rec)
                    for platform, _sent in self._platforms.values():
                        platform.t.routes, platform.t.terminals = routes.routes, routes.terminals
                elif rec.topic in INPUT_TOPICS:
                    self._input(rec)
                elif output_topic(rec.topic):
                    for cid, outs in index_recorded([rec]).items():
                        payment = self.s.payments.setdefault(cid, LivePayment())
                        payment.recorded += outs
                        payment.last_ms = max(payment.last_ms, rec.timestamp_ms)

    def _input(self, rec: Record) -> None:
        routes = self.s.routes
        assert routes is not None
        ev = _event_of(rec)
        if ev is not None and ev.type == "ClockTicked":
            self.s.ticks.setdefault(rec.partition, []).append((rec, ev.occurred_at))
        elif ev is not None:
            payment = self.s.payments.setdefault(ev.correlation_id, LivePayment())
            payment.inputs.append(rec)
            payment.last_ms = max(payment.last_ms, rec.timestamp_ms)
            if payment.state is None:
                payment.state = (routes.routes, routes.terminals)
        platform, sent = self._platform(rec.partition)
        for out in self.replayer.run(platform, sent, rec):
            payment = self.s.payments.setdefault(out.event.correlation_id, LivePayment())
            payment.derived.append(out)
            payment.last_ms = max(payment.last_ms, rec.timestamp_ms)  # a tick's outputs
        sent.clear()

    def _waiting(self, cid: str, payment: LivePayment, now_ms: int, grace_ms: int) -> bool:
        """Whether the platform still waits on the payment (a deadline, a parked decision,
        not passed by the grace yet): its check waits too."""
        partition = next((r.partition for r in payment.inputs), None)
        slot = self.s.pending.get(partition, {}).get(cid) if partition is not None else None
        if not slot:
            return False
        until = None
        if slot.get("state"):
            pending = decide.Pending.model_validate(slot["state"])
            until = pending.deadline if pending.waiting else None
        elif slot.get("parked") and not slot.get("parked_done"):
            until = datetime.fromisoformat(slot["parked_until"])
        return until is not None and until.timestamp() * 1000 + grace_ms > now_ms

    def due(self, now_ms: int, grace_ms: int) -> list[tuple[str, Finding]]:
        """The findings (with their payment's id) of the payments whose grace has passed by
        ``now_ms``."""
        found: list[tuple[str, Finding]] = []
        with _quiet():
            for cid, payment in list(self.s.payments.items()):
                if (payment.last_ms + grace_ms > now_ms
                        or self._waiting(cid, payment, now_ms, grace_ms)):
                    continue
                del self.s.payments[cid]
                if not payment.inputs and cid in self.s.done:
                    self.s.counts["recorded again after their payment was checked"] += 1
                    continue
                self.s.done[cid] = now_ms
                found += [(cid, f) for f in self._check(cid, payment, now_ms, grace_ms)]
        self.s.done = {c: t for c, t in self.s.done.items() if t + 20 * grace_ms > now_ms}
        horizon = int((self.rules.load_timeout + self.rules.park_grace + self.rules.timeout
                       ).total_seconds() * 1000) + grace_ms
        oldest = min((r.timestamp_ms for p in self.s.payments.values() for r in p.inputs),
                     default=now_ms)
        for partition, ticks in self.s.ticks.items():
            self.s.ticks[partition] = [t for t in ticks
                                       if t[0].timestamp_ms >= min(oldest, now_ms - horizon)]
        return found

    def _check(self, cid: str, payment: LivePayment, now_ms: int, grace_ms: int
               ) -> list[Finding]:
        if not payment.inputs:
            return [_at(r.record, (
                f"recorded {r.type} {r.event_id} answers payment {cid}, of which the platform "
                f"received nothing (forged, or its inputs were removed)"))
                for r in payment.recorded]
        requests = {e.event_id: e for r in payment.inputs
                    if isinstance(e := _event_of(r), PaymentRequested)}
        found, matched = _compare(payment.derived, payment.recorded, self.hsm, requests, now_ms,
                                  grace_ms)
        if not found:
            self.s.counts["payments re-derived"] += 1
            return []
        assert payment.state is not None and self.s.routes is not None
        ticks = self.s.ticks.get(payment.inputs[0].partition, [])
        # the state of the payment's time; then the state now (the identity topics may be
        # read after the payment's: a terminal's key set, a registration)
        now_state = (self.s.routes.routes, self.s.routes.terminals)
        for state in (payment.state, now_state):
            other = _other_orders(self.replayer, cid, payment.inputs, ticks, state,
                                  payment.recorded, requests, now_ms, grace_ms)
            if other is not None and not other[0]:
                self.s.counts["payments re-derived in another order of their topics"] += 1
                return []
            if other is not None and (len(other[0]), -other[1]) < (len(found), -matched):
                found, matched = other
            if state == now_state:
                break
        return found


def _live_key(rec: Record) -> tuple[int, int, str, int, int]:
    """Arrival in time order: the identity topics first at a tie, then the inputs (as in the
    batch audit), the outputs last."""
    if rec.topic in GLOBAL_TOPICS:
        rank = GLOBAL_TOPICS.index(rec.topic)
    elif rec.topic in INPUT_TOPICS:
        rank = len(GLOBAL_TOPICS) + INPUT_TOPICS.index(rec.topic)
    else:
        rank = 99
    return rec.timestamp_ms, rank, rec.topic, rec.partition, rec.offset
