"""The trusted platform's handlers: one method per consumed topic, state passed in.

Each handler takes one record (``Record``: value bytes, partition, broker time), decodes it,
reads what it needs from the tables, calls the pure decision (``agents.platform.decide``,
``agents.platform.transit``), writes the tables and sends the events out through ``Outbox``.
There is no Kafka and no Faust here: the Faust app (``agents.platform.app``) passes its tables
and a sender, a unit test passes dicts and a list.

Tables (dict-like, values are JSON-ready dicts):
- ``routes`` (provider id -> ``Route``), ``terminals`` (terminal id -> ``TerminalRecord``),
  ``keys`` (the key store's records): every platform worker needs all of them;
- ``parked`` (provider id -> keys that arrived before the registration);
- ``pending`` (payment id -> the payment's one record: its request's event id and digest, the
  partition, the in-flight state (``decide.Pending``) and the answer the terminal got), written
  once per step; co-partitioned with the payment topics;
- ``policies`` (issuer -> its sealed card-management policy): the card manager's
  (``agents.platform.cardmanager``, whose sessions live in memory only).

A request whose event id is known is a resend: the same bytes get the stored answer again (or
nothing more while it is in flight); the same event id (or payment id) with other content is
refused loudly: a dead letter, a warning, and the ``replay-changed`` count in ``cardbus up``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from agents.platform import admission, decide, scripts, transit
from agents.platform.cardmanager import CardManager
from agents.platform.parsed import Parsed
from agents.platform.tablekeys import TableKeyStore
from cardbus.crypto.hsm import PlatformHsm
from cardbus.logs import bind_correlation, get_logger
from schemas.base import Event
from schemas.cardmgmt import PursePersonalisationPrepared
from schemas.cardstatus import IssuerScriptApplied
from schemas.clock import ClockTicked
from schemas.payments import (
    AuthorizationDecided,
    PaymentCancelled,
    PaymentCompleted,
    PaymentRequested,
    ReversalCompleted,
)
from schemas.providers import ProviderAdmitted, ProviderKeysProvisioned, ProviderRegistered
from schemas.terminals import TerminalEnrolled, TerminalStatusChanged
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)
from streams import codec
from streams.records import Record, Send, Table, received_at
from streams.topics import (
    CARD_MANAGEMENT,
    CARD_POLICIES,
    KEY_HISTORY,
    PAYMENT_REQUESTS,
    PROVIDER_ADMISSIONS,
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_RESULTS,
    TERMINAL_KEYS,
    TERMINAL_RESULTS,
    TERMINAL_STATUS,
    TERMINALS,
    TRANSIT_LOADS,
    provider_requests_topic,
)

log = get_logger("platform")

M = TypeVar("M", bound=BaseModel)


@dataclass
class PlatformTables:
    """The platform's state (Faust tables in the app, dicts in unit tests)."""

    routes: Table = field(default_factory=dict)
    admissions: Table = field(default_factory=dict)
    parked_registrations: Table = field(default_factory=dict)
    terminals: Table = field(default_factory=dict)
    keys: Table = field(default_factory=dict)
    parked: Table = field(default_factory=dict)
    pending: Table = field(default_factory=dict)
    policies: Table = field(default_factory=dict)  # issuer -> its sealed card policy


@dataclass(frozen=True)
class PlatformRules:
    """The platform's timing rules."""

    timeout: timedelta = decide.DEFAULT_TIMEOUT
    load_timeout: timedelta = timedelta(seconds=60)
    park_grace: timedelta = timedelta(seconds=30)
    """How long a decision that matches no payment waits for its (resent) request."""


class Platform:
    """The trusted platform's handlers over its tables."""

    def __init__(self, tables: PlatformTables, hsm: PlatformHsm, keystore: TableKeyStore,
                 send: Send, rules: PlatformRules | None = None) -> None:
        self.t = tables
        self.hsm = hsm
        self.keystore = keystore
        self.send = send
        self.rules = rules or PlatformRules()
        # partition -> payment id -> deadline: an in-memory index over ``pending`` for ticks
        self.deadlines: dict[int, dict[str, datetime]] = {}
        self._routes = Parsed(decide.Route)
        self._terminals = Parsed(decide.TerminalRecord)
        self.cards = CardManager(tables.policies, hsm, send, routes=self.routes,
                                 terminal=self.terminal)

    async def send_keys(self, terminal_id: str, event: Event) -> None:
        """A terminal's key set: its current state (compacted), and the key history (kept in
        full: the audit checks each terminal MAC against the key issued at its time)."""
        await self.send(KEY_HISTORY.name, terminal_id, event)  # first: its time is the key's
        await self.send(TERMINAL_KEYS.name, terminal_id, event)

    # -- reading state ---------------------------------------------------------------------

    def routes(self) -> dict[str, decide.Route]:
        """Every provider's route (parsed once per change of its record)."""
        out = {}
        for key, raw in list(self.t.routes.items()):
            route = self._routes.get(key, raw)
            if route is not None:
                out[key] = route
        return out

    def route(self, provider_id: str) -> decide.Route | None:
        return self._routes.get(provider_id, self.t.routes.get(provider_id))

    def terminal(self, terminal_id: str) -> decide.TerminalRecord | None:
        return self._terminals.get(terminal_id, self.t.terminals.get(terminal_id))

    def load_pending(self, payment_id: str) -> tuple[decide.Pending | None, int | None]:
        """The payment's in-flight state and partition (None, None if it has none)."""
        slot = self.t.pending.get(payment_id)
        if not slot or not slot.get("state"):
            return None, None
        return decide.Pending.model_validate(slot["state"]), slot.get("partition")

    # -- writing state and events ----------------------------------------------------------

    def save_keys(self) -> None:
        for k, v in self.keystore.flush():
            self.t.keys[k] = v

    def save(self, payment_id: str, entry: decide.Pending | None, partition: int,
             out: decide.Out | None = None, *, request: PaymentRequested | None = None) -> None:
        """Write the payment's one record: ``entry``, and the answer to the terminal if ``out``
        holds one (``request``: the first time, its event id and digest)."""
        slot = dict(self.t.pending.get(payment_id) or {})
        if request is not None:
            slot.update(request_event_id=request.event_id, digest=digest(request))
        slot["partition"] = partition
        slot["state"] = entry.model_dump(mode="json") if entry is not None else None
        answer = _answer(out) if out is not None else None
        if answer is not None:
            slot["answer"] = answer.model_dump(mode="json")
        self.t.pending[payment_id] = slot
        if entry is not None and entry.waiting:
            self.deadlines.setdefault(partition, {})[payment_id] = entry.deadline
        else:
            self.deadlines.get(partition, {}).pop(payment_id, None)

    async def resend(self, ev: PaymentRequested, slot: dict[str, Any]) -> None:
        """A request for a payment the platform knows: the stored answer, if the request is the
        same; ``Rejected`` (loudly) if it is not."""
        if slot.get("request_event_id") != ev.event_id:
            raise decide.ReplayChanged(
                f"payment id {ev.correlation_id} was requested by event "
                f"{slot.get('request_event_id')}, not {ev.event_id}")
        if slot.get("digest") != digest(ev):
            raise decide.ReplayChanged(
                f"request {ev.event_id} resent with different content")
        answer = slot.get("answer")
        if answer:  # the same request again: the same answer again
            await self.send(TERMINAL_RESULTS.name, ev.terminal_id,
                            PaymentCompleted.model_validate(answer))

    async def emit(self, out: decide.Out) -> None:
        for role, key, event in out.events:
            if role == "terminal":
                await self.send(TERMINAL_RESULTS.name, key, event)
            elif role == "terminal-keys":
                await self.send_keys(key, event)
            else:
                await self.send(provider_requests_topic(role.split(":", 1)[1]), key, event)

    async def reissue_terminal_keys(self, cause: Event) -> None:
        current = self.routes()
        out = decide.Out()
        for tid, raw in list(self.t.terminals.items()):
            if raw:
                record = decide.TerminalRecord.model_validate(raw)
                out.add("terminal-keys", tid,
                        decide.keys_event(record, current, self.hsm, cause=cause))
        await self.emit(out)

    # -- providers -------------------------------------------------------------------------

    async def on_admission(self, record: Record) -> None:
        """``cardbus.provider-admissions``: an operator admitted a provider (its identity key
        and card ranges); a registration that waited for it is taken now."""
        ev = codec.decode_as(PROVIDER_ADMISSIONS.name, record.value, ProviderAdmitted)
        admitted = admission.admit_provider(ev, self._admissions(), self.hsm.verifier)
        self.t.admissions[ev.provider_id] = admitted.model_dump(mode="json")
        log.info("provider admitted", provider=ev.provider_id, kind=ev.kind)
        waiting = self.t.parked_registrations.get(ev.provider_id)
        if waiting:
            del self.t.parked_registrations[ev.provider_id]
            await self._register(ProviderRegistered.model_validate(waiting))

    def _admissions(self) -> dict[str, ProviderAdmitted]:
        return {k: ProviderAdmitted.model_validate(v)
                for k, v in list(self.t.admissions.items()) if v}

    async def on_provider(self, record: Record) -> None:
        """``cardbus.providers``: a provider joined or updated its registration; routed only
        as the operator admitted it (a registration without an admission waits for one)."""
        ev = codec.decode_as(PROVIDER_REGISTRATIONS.name, record.value, ProviderRegistered)
        if not self.t.admissions.get(ev.provider_id):
            self.t.parked_registrations[ev.provider_id] = ev.model_dump(mode="json")
            log.warning("provider registration waits for an operator's admission",
                        provider=ev.provider_id)
            return
        await self._register(ev)

    async def _register(self, ev: ProviderRegistered) -> None:
        raw = self.t.admissions.get(ev.provider_id)
        route = admission.register_admitted(
            ev, self.route(ev.provider_id),
            admission=ProviderAdmitted.model_validate(raw) if raw else None,
            routes={k: r for k, r in self.routes().items() if k != ev.provider_id})
        self.t.routes[ev.provider_id] = route.model_dump(mode="json")
        log.info("provider registered", provider=ev.provider_id, kind=ev.kind)
        waiting = self.t.parked.get(ev.provider_id)
        if waiting:  # its keys arrived first (another topic): take them now
            del self.t.parked[ev.provider_id]
            route = self._provision(ProviderKeysProvisioned.model_validate(waiting), route)
        if route.keys_ready:  # terminals learn a provider once its cards can be routed
            await self.reissue_terminal_keys(ev)

    def _provision(self, ev: ProviderKeysProvisioned, route: decide.Route) -> decide.Route:
        route = decide.provision_keys(ev, route, self.hsm)
        self.save_keys()
        self.t.routes[ev.provider_id] = route.model_dump(mode="json")
        log.info("provider keys stored", provider=ev.provider_id, key_count=len(ev.keys))
        return route

    async def on_provider_keys(self, record: Record) -> None:
        """``cardbus.provider-keys``: a provider's key blocks (kept until it registers)."""
        ev = codec.decode_as(PROVIDER_KEYS.name, record.value, ProviderKeysProvisioned)
        route = self.route(ev.provider_id)
        if route is None:  # registration not seen yet: keep the keys until it is
            self.t.parked[ev.provider_id] = ev.model_dump(mode="json")
            log.info("provider keys parked until registration", provider=ev.provider_id)
            return
        was_ready = route.keys_ready
        self._provision(ev, route)
        if not was_ready:  # its cards can be routed now: the terminals learn the provider
            await self.reissue_terminal_keys(ev)

    # -- terminals -------------------------------------------------------------------------

    async def on_enrollment(self, record: Record) -> None:
        """``cardbus.terminals``: a terminal registered its public keys; issue its keys."""
        ev = codec.decode_as(TERMINALS.name, record.value, TerminalEnrolled)
        entry, keys = decide.enroll_terminal(ev, self.terminal(ev.terminal_id), self.hsm,
                                             self.routes(), initial_status="suspended")
        self.save_keys()
        self.t.terminals[ev.terminal_id] = entry.model_dump(mode="json")
        await self.send_keys(ev.terminal_id, keys)
        log.info("terminal enrolled", terminal=ev.terminal_id, status=entry.status)

    async def on_status(self, record: Record) -> None:
        """``cardbus.terminal-status``: an operator activated or suspended a terminal."""
        ev = codec.decode_as(TERMINAL_STATUS.name, record.value, TerminalStatusChanged)
        entry = decide.change_status(ev, self.terminal(ev.terminal_id), self.hsm.verifier)
        self.t.terminals[ev.terminal_id] = entry.model_dump(mode="json")
        # the terminal's key set says its status: it knows when it may take payments
        await self.send_keys(ev.terminal_id,
                        decide.keys_event(entry, self.routes(), self.hsm, cause=ev))
        log.info("terminal status", terminal=ev.terminal_id, status=ev.status)

    # -- payments --------------------------------------------------------------------------

    async def on_request(self, record: Record) -> None:
        """``cardbus.payment-requests``: a payment request, a terminal's cancellation, or the
        platform's clock tick."""
        ev = codec.decode_as(PAYMENT_REQUESTS.name, record.value,
                             (PaymentRequested, PaymentCancelled, ClockTicked,
                              IssuerScriptApplied))
        if isinstance(ev, ClockTicked):
            now = decide.accept_tick(ev, broker_time=received_at(record),
                                     platform=self.hsm.verifier)
            await self.on_tick(ev.model_copy(update={"occurred_at": now}), record.partition)
        elif isinstance(ev, IssuerScriptApplied):
            with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
                out = scripts.forward_result(ev, self.load_pending(ev.correlation_id)[0],
                                             self.hsm)
                log.info("issuer script result", script=ev.script, sw=f"{ev.sw:04X}")
                await self.emit(out)
        elif isinstance(ev, PaymentCancelled):
            await self.on_cancel(ev, record)
        else:
            await self.on_payment(ev, record)

    async def on_payment(self, ev: PaymentRequested, record: Record) -> None:
        """A payment request: decided and routed, or a resend answered from the record."""
        with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
            slot = self.t.pending.get(ev.correlation_id) or {}
            if slot.get("request_event_id"):
                await self.resend(ev, slot)
                return
            if slot.get("cancelled") == ev.event_id:
                log.info("request cancelled by its terminal before it arrived: not routed")
                return
            entry, out = decide.request_payment(
                ev, received_at=received_at(record), terminal=self.terminal(ev.terminal_id),
                routes=self.routes(), hsm=self.hsm, timeout=self.rules.timeout)
            self.save(ev.correlation_id, entry, record.partition, out, request=ev)
            if entry is not None:
                log.debug("payment routed", provider=entry.provider_id,
                          masked_pan=entry.masked_pan, amount=entry.amount.amount)
            else:
                log.info("payment declined", code=_code(out))
            await self.emit(out)

    async def on_cancel(self, ev: PaymentCancelled, record: Record) -> None:
        """The terminal gave up (no answer by its deadline): undo the bank's decision."""
        with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
            entry, part = self.load_pending(ev.correlation_id)
            new, out = decide.cancel(ev, entry, received_at=received_at(record), hsm=self.hsm)
            if new is None:  # the request never arrived (or was refused): remember the cancel
                slot = dict(self.t.pending.get(ev.correlation_id) or {})
                slot.update(cancelled=ev.request_event_id, partition=record.partition)
                self.t.pending[ev.correlation_id] = slot
            elif new != entry or out.events:
                self.save(ev.correlation_id, new, part if part is not None else record.partition)
            log.warning("payment cancelled by the terminal", reason=ev.reason,
                        reversed=bool(out.events))
            await self.emit(out)

    def _deadline_index(self, partition: int) -> dict[str, datetime]:
        index = self.deadlines.get(partition)
        if index is None:  # first tick since (re)assignment: rebuild from the table
            index = self.deadlines[partition] = {}
            for pid, slot in list(self.t.pending.items()):
                if not slot or slot.get("partition") != partition:
                    continue
                if slot.get("state"):
                    entry, _ = self.load_pending(pid)
                    if entry is not None and entry.waiting:
                        index[pid] = entry.deadline
                elif slot.get("parked") and not slot.get("parked_done"):
                    index[pid] = datetime.fromisoformat(slot["parked_until"])
        return index

    async def on_tick(self, tick: ClockTicked, partition: int) -> None:
        """Decline (91) and reverse every payment of ``partition`` past its deadline; reverse
        every parked approval no payment claimed in its grace period."""
        index = self._deadline_index(partition)
        now = tick.occurred_at
        for payment_id, deadline in sorted(index.items(), key=lambda kv: kv[1]):
            if deadline > now:
                break
            index.pop(payment_id, None)
            entry, _ = self.load_pending(payment_id)
            with bind_correlation(payment_id):
                if entry is None:
                    await self._release_parked(payment_id, partition, now)
                    continue
                expired, out = decide.expire(entry, now=now, hsm=self.hsm)
                self.save(payment_id, expired, partition, out)
                if out.events:
                    log.warning("payment timed out", provider=entry.provider_id)
                await self.emit(out)

    async def _release_parked(self, payment_id: str, partition: int, now: datetime) -> None:
        slot = dict(self.t.pending.get(payment_id) or {})
        if not slot.get("parked") or slot.get("parked_done") or slot.get("state"):
            return
        dec = AuthorizationDecided.model_validate(slot["parked"])
        out = decide.reverse_unmatched(dec, at=now, hsm=self.hsm)
        slot["parked_done"] = True
        self.t.pending[payment_id] = slot
        log.warning("decision matched no payment in its grace period",
                    provider=dec.provider_id, approved=dec.approved, reversed=bool(out.events))
        await self.emit(out)

    def due(self, partition: int, now: datetime) -> bool:
        """Whether a payment of ``partition`` is past its deadline (a tick is needed)."""
        return any(deadline <= now for deadline in self._deadline_index(partition).values())

    def forget_deadlines(self) -> None:
        """After a rebalance: each partition's index is rebuilt at its next tick."""
        self.deadlines.clear()

    async def on_result(self, record: Record) -> None:
        """``cardbus.provider-results``: a provider's decision, reversal or load answer."""
        ev = codec.decode_as(PROVIDER_RESULTS.name, record.value,
                             (AuthorizationDecided, ReversalCompleted, TransitLoadAuthorized,
                              TransitLoadConfirmed, PursePersonalisationPrepared))
        if isinstance(ev, PursePersonalisationPrepared):
            await self.cards.on_purse(ev, received_at(record))
        elif isinstance(ev, AuthorizationDecided):
            await self._decision(ev, record)
        elif isinstance(ev, ReversalCompleted):
            decide.check_provider_seal(ev, self.route(ev.provider_id))
            log.info("reversal completed", provider=ev.provider_id, reversed=ev.reversed,
                     correlation_id=ev.correlation_id)
        else:
            await self._operator_answer(ev)

    async def _decision(self, ev: AuthorizationDecided, record: Record) -> None:
        with bind_correlation(ev.correlation_id, provider=ev.provider_id):
            entry, part = self.load_pending(ev.correlation_id)
            if entry is None:
                self._park(ev, record)
                return
            new, out = decide.take_decision(ev, pending=entry, route=self.route(ev.provider_id),
                                            hsm=self.hsm, load_timeout=self.rules.load_timeout)
            if new is not None and part is not None and (new != entry or out.events):
                self.save(ev.correlation_id, new, part, out)
            for _role, _key, event in out.events:
                if isinstance(event, PaymentCompleted):
                    # the bus is the record of every payment: approvals at debug level
                    (log.debug if event.approved else log.info)(
                        "payment answered", code=event.response_code)
            await self.emit(out)

    def _park(self, ev: AuthorizationDecided, record: Record) -> None:
        """A decision no payment of this partition claims (its request was never processed
        here, or its record was lost): kept for a grace period, in which a resent request
        claims it; then an approval is reversed (``_release_parked``)."""
        decide.check_provider_seal(ev, self.route(ev.provider_id))
        slot = dict(self.t.pending.get(ev.correlation_id) or {})
        if slot.get("parked"):
            return  # the same decision again
        until = received_at(record) + self.rules.park_grace
        slot.update(parked=ev.model_dump(mode="json"), parked_until=until.isoformat(),
                    partition=record.partition)
        self.t.pending[ev.correlation_id] = slot
        self.deadlines.setdefault(record.partition, {})[ev.correlation_id] = until
        log.warning("decision parked: it matches no payment yet", provider=ev.provider_id,
                    approved=ev.approved)

    async def _operator_answer(self, ev: TransitLoadAuthorized | TransitLoadConfirmed) -> None:
        with bind_correlation(ev.correlation_id, provider=ev.operator_id):
            entry, part = self.load_pending(ev.correlation_id)
            new, out = transit.operator_answer(ev, pending=entry,
                                               route=self.route(ev.operator_id), hsm=self.hsm)
            if new is not None and part is not None and (new != entry or out.events):
                self.save(ev.correlation_id, new, part)
            log.info("transit load answer", step=ev.type,
                     stage=new.load_stage if new else None)
            await self.emit(out)

    async def on_load(self, record: Record) -> None:
        """``cardbus.transit-loads``: a top-up's load request or the card's proof of load."""
        ev = codec.decode_as(TRANSIT_LOADS.name, record.value,
                             (TransitLoadRequested, TransitLoadApplied, TransitLoadAborted))
        with bind_correlation(ev.correlation_id, terminal=ev.terminal_id):
            entry, part = self.load_pending(ev.correlation_id)
            if isinstance(ev, TransitLoadRequested):
                new, out = transit.request_load(ev, pending=entry, routes=self.routes(),
                                                hsm=self.hsm, received_at=received_at(record))
            else:
                new, out = transit.card_report(ev, pending=entry, hsm=self.hsm,
                                               received_at=received_at(record))
            if part is not None and (new != entry or out.events):
                self.save(ev.correlation_id, new, part)
            log.info("transit load step", step=ev.type, stage=new.load_stage)
            await self.emit(out)

    def handlers(self) -> dict[str, Callable[[Record], Awaitable[None]]]:
        """Topic name -> handler: what the app subscribes to."""
        return {
            PROVIDER_ADMISSIONS.name: self.on_admission,
            PROVIDER_REGISTRATIONS.name: self.on_provider,
            PROVIDER_KEYS.name: self.on_provider_keys,
            TERMINALS.name: self.on_enrollment,
            TERMINAL_STATUS.name: self.on_status,
            PAYMENT_REQUESTS.name: self.on_request,
            PROVIDER_RESULTS.name: self.on_result,
            TRANSIT_LOADS.name: self.on_load,
            CARD_POLICIES.name: self.cards.on_policy,
            CARD_MANAGEMENT.name: self.cards.on_message,
        }


def _answer(out: decide.Out) -> PaymentCompleted | None:
    """The answer to the terminal among ``out``'s events, if any."""
    for _role, _key, event in out.events:
        if isinstance(event, PaymentCompleted):
            return event
    return None


def _code(out: decide.Out) -> str | None:
    answer = _answer(out)
    return answer.response_code if answer is not None else None


def digest(event: Event) -> str:
    """SHA-256 of an event's canonical bytes: what a resend must match."""
    return hashlib.sha256(event.canonical_bytes()).hexdigest()
