"""The card manager as a pure state machine: ``(state, card responses) -> (state, next steps)``.

The manager (the platform) holds the issuer's keys; the terminal only relays APDUs. A session:

1. ``start(script, host_challenge)``: SELECT the ISD, INITIALIZE UPDATE.
2. ``advance(state, responses, card_keys)``: the card's key set comes from ``card_keys(kdd)``
   (the issuer's master, diversified with the card's key diversification data); the card's
   challenge (pseudo-random: it must follow from the card's sequence counter) and cryptogram
   are checked, then EXTERNAL AUTHENTICATE and the script's commands go out, protected at the
   script's security level, in batches that end at a GET STATUS (whose answer may continue,
   '6310'). Every response's R-MAC is checked here: the terminal cannot forge one.
3. The session ends with an ``Outcome``: done, or failed at a named step with the card's
   status word or the check that failed.

A batch of ``Step``s can be relayed in one round trip: the relay sends them in order and stops
at the first status word a step does not ``expect``, returning the responses it got. Each
command's MAC chains on the previous one, so a relay cannot reorder, drop or replay commands
without the card refusing ('6982'), nor alter a response without ``advance`` failing.

No clock, no randomness, no I/O: the host challenge comes in with the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from cardbus.crypto import scp03
from cardbus.errors import CardError, SecureChannelError
from cardbus.gp import commands
from cardbus.gp.card import (
    ISD_AID,
    STATUS_APPS,
    STATUS_ISD,
    STATUS_LOAD_FILES_MODULES,
    CardLife,
    LoadFile,
    Sw,
)
from cardbus.gp.commands import InitUpdateResponse, RegistryEntry

Response = tuple[bytes, int]  # (data, status word) as the card answered


@dataclass(frozen=True)
class Step:
    """One APDU for the terminal to relay, and the status words after which it goes on."""

    apdu: bytes
    label: str
    expect: tuple[int, ...] = (Sw.OK,)


# -- what a session is asked to do ---------------------------------------------------------

@dataclass(frozen=True)
class ListContent:
    """GET STATUS: the ISD, the applications, the load files with their modules."""


@dataclass(frozen=True)
class PursePersonalisation:
    """What STORE DATA writes into a new e-purse (keys encrypted under Key-DEK on the way)."""

    card_number: str
    card_token: str  # the operator's token: the purse's keys are diversified by it
    load_key: bytes = field(repr=False)
    tac_key: bytes = field(repr=False)
    label: str = "TRANSIT PURSE"


@dataclass(frozen=True)
class InstallApp:
    """INSTALL [for install and make selectable] of ``load_file``'s module as ``instance``,
    then its personalisation (INSTALL [for personalization] and STORE DATA) if given."""

    load_file: LoadFile
    instance: bytes
    personalisation: PursePersonalisation | None = None


@dataclass(frozen=True)
class LockApp:
    """SET STATUS of an application: lock, or unlock."""

    instance: bytes
    lock: bool = True


@dataclass(frozen=True)
class LockCard:
    """SET STATUS of the card: CARD_LOCKED, or back to SECURED."""

    lock: bool = True


@dataclass(frozen=True)
class DeleteApp:
    """DELETE an instance (or a load file with ``related``)."""

    aid: bytes
    related: bool = False


Operation = ListContent | InstallApp | LockApp | LockCard | DeleteApp


@dataclass(frozen=True)
class Script:
    """The operations of one session, the security level and the key version to use."""

    operations: tuple[Operation, ...]
    level: int = scp03.Level.C_MAC | scp03.Level.C_DECRYPTION | scp03.Level.R_MAC \
        | scp03.Level.R_ENCRYPTION
    key_version: int = 0


# -- the state ----------------------------------------------------------------------------

Reads = Literal["none", "status", "init", "auth"]


@dataclass(frozen=True)
class Planned:
    """A plain command not sent yet."""

    apdu: bytes
    label: str
    reads: Reads = "none"
    expect: tuple[int, ...] = (Sw.OK,)


@dataclass(frozen=True)
class Sent:
    """A command in the batch out, with the channel state its response is checked against."""

    planned: Planned
    channel: scp03.Channel | None = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """How a session ended; what GET STATUS reported, by P1."""

    ok: bool
    reason: str
    status: tuple[tuple[int, tuple[RegistryEntry, ...]], ...] = ()
    failed_step: str | None = None
    sw: int | None = None

    def entries(self, p1: int) -> tuple[RegistryEntry, ...]:
        return tuple(e for p, found in self.status if p == p1 for e in found)

    @property
    def applications(self) -> tuple[RegistryEntry, ...]:
        return self.entries(STATUS_APPS)

    @property
    def card_life(self) -> CardLife | None:
        isd = self.entries(STATUS_ISD)
        return CardLife(isd[0].life) if isd else None


@dataclass(frozen=True)
class SessionState:
    """One card-management session between the manager and one card."""

    script: Script
    host_challenge: bytes
    phase: Literal["initializing", "secured", "done"] = "initializing"
    channel: scp03.Channel | None = field(default=None, repr=False)
    queue: tuple[Planned, ...] = ()
    sent: tuple[Sent, ...] = ()
    status: tuple[tuple[int, tuple[RegistryEntry, ...]], ...] = ()
    outcome: Outcome | None = None

    @property
    def done(self) -> bool:
        return self.phase == "done"


def start(script: Script, host_challenge: bytes) -> tuple[SessionState, list[Step]]:
    """Open a session: SELECT the issuer security domain, INITIALIZE UPDATE."""
    if len(host_challenge) != scp03.CHALLENGE_LEN:
        raise SecureChannelError("the host challenge is 8 bytes")
    if script.level not in scp03.LEVELS:
        raise SecureChannelError(f"security level {script.level:#04x} is not offered")
    select = Planned(commands.select(ISD_AID), "select ISD",
                     expect=(Sw.OK, Sw.SELECTED_INVALIDATED))  # 6283: the card is locked
    init = Planned(commands.initialize_update(host_challenge, script.key_version),
                   "initialize update", "init")
    state = SessionState(script, host_challenge, sent=(Sent(select, None), Sent(init, None)))
    return state, [Step(p.planned.apdu, p.planned.label, p.planned.expect) for p in state.sent]


def advance(state: SessionState, responses: Sequence[Response],
            card_keys: Callable[[bytes], scp03.StaticKeys]) -> tuple[SessionState, list[Step]]:
    """The card's responses to the last batch -> the next batch (empty once done).

    ``card_keys(kdd)`` gives the card's static key set; it is asked once, at INITIALIZE
    UPDATE. A response list shorter than the batch means the relay stopped at the last one."""
    if state.done:
        return state, []
    if len(responses) > len(state.sent) or not responses:
        return _fail(state, "relay", "the relay answered a batch that was not sent"), []
    for sent, (data, sw) in zip(state.sent, responses, strict=False):
        if sw not in sent.planned.expect:
            return _fail(state, sent.planned.label, f"card answered {sw:04X}", sw), []
        try:
            state = _read(state, sent, data, sw, card_keys)
        except (SecureChannelError, CardError) as exc:
            return _fail(state, sent.planned.label, str(exc), sw), []
        if state.done:
            return state, []
    if len(responses) < len(state.sent):
        return _fail(state, state.sent[len(responses)].planned.label,
                     "the relay stopped before this command"), []
    return _next_batch(replace(state, sent=()))


def _read(state: SessionState, sent: Sent, data: bytes, sw: int,
          card_keys: Callable[[bytes], scp03.StaticKeys]) -> SessionState:
    """One response of the batch."""
    label = sent.planned.label
    if sent.planned.reads == "init":
        return _authenticate(state, data, card_keys)
    if sent.channel is None:  # SELECT ISD, EXTERNAL AUTHENTICATE: no R-MAC on these
        return state
    plain = scp03.unwrap_response(sent.channel, data, sw)
    if sent.planned.reads != "status":
        return state
    p1 = sent.planned.apdu[2]
    found = tuple(commands.parse_status(plain)) if sw != Sw.REFERENCED_DATA_NOT_FOUND else ()
    state = replace(state, status=(*state.status, (p1, found)))
    if sw == Sw.MORE_DATA:  # the rest comes first, before any other command
        more = Planned(commands.get_status(p1, more=True), label, "status", sent.planned.expect)
        state = replace(state, queue=(more, *state.queue))
    return state


def _authenticate(state: SessionState, data: bytes,
                  card_keys: Callable[[bytes], scp03.StaticKeys]) -> SessionState:
    """Check the card's INITIALIZE UPDATE answer; plan EXTERNAL AUTHENTICATE and the script."""
    iu = InitUpdateResponse.parse(data)
    if iu.scp != 0x03:
        raise SecureChannelError(f"the card offers SCP{iu.scp:02X}, not SCP03")
    keys = card_keys(iu.kdd)
    if iu.key_version != keys.version:
        raise SecureChannelError(f"the card uses key version {iu.key_version:#x}")
    if iu.i & scp03.I_PSEUDO_RANDOM:
        if iu.sequence_counter is None:
            raise SecureChannelError("pseudo-random challenge without a sequence counter")
        scp03.verify_cryptogram(scp03.card_challenge(keys.enc, iu.sequence_counter, ISD_AID),
                                iu.card_challenge, "card challenge (replayed answer?)")
    level = state.script.level
    wants_rmac, wants_renc = level & scp03.Level.R_MAC, level & scp03.Level.R_ENCRYPTION
    if (wants_rmac and not iu.i & scp03.I_RMAC) or (wants_renc and not iu.i & scp03.I_RENC):
        raise SecureChannelError(f"the card does not offer security level {level:#04x}")
    sk = scp03.session_keys(keys, state.host_challenge, iu.card_challenge)
    scp03.verify_cryptogram(scp03.card_cryptogram(sk, state.host_challenge, iu.card_challenge),
                            iu.card_cryptogram, "card cryptogram")
    host = scp03.host_cryptogram(sk, state.host_challenge, iu.card_challenge)
    auth = Planned(commands.external_authenticate(level, host), "external authenticate",
                   "auth")
    plan = [auth] + [p for op in state.script.operations for p in _plan(op, keys.dek)]
    return replace(state, phase="secured", channel=scp03.begin(sk, level), queue=tuple(plan))


def _plan(op: Operation, dek: bytes) -> list[Planned]:
    """The plain commands of one operation (sensitive data encrypted under Key-DEK here)."""
    if isinstance(op, ListContent):
        absent = (Sw.OK, Sw.MORE_DATA, Sw.REFERENCED_DATA_NOT_FOUND)
        return [Planned(commands.get_status(p1), f"get status {p1:02X}", "status", absent)
                for p1 in (STATUS_ISD, STATUS_APPS, STATUS_LOAD_FILES_MODULES)]
    if isinstance(op, InstallApp):
        name = op.instance.hex().upper()
        out = [Planned(commands.install(op.load_file.aid, op.load_file.module, op.instance),
                       f"install {name}")]
        if op.personalisation is not None:
            p = op.personalisation
            out.append(Planned(commands.install_for_personalization(op.instance),
                               f"install for personalization {name}"))
            out += [Planned(c, f"store data {name} block {i}") for i, c in enumerate(
                commands.purse_personalisation(dek, p.card_number, p.card_token, p.load_key,
                                               p.tac_key, p.label))]
        return out
    if isinstance(op, LockApp):
        verb = "lock" if op.lock else "unlock"
        return [Planned(commands.set_status_app(op.instance, lock=op.lock),
                        f"{verb} {op.instance.hex().upper()}")]
    if isinstance(op, LockCard):
        target = CardLife.CARD_LOCKED if op.lock else CardLife.SECURED
        return [Planned(commands.set_status_card(target), f"set card {target.name}")]
    return [Planned(commands.delete(op.aid, related=op.related),
                    f"delete {op.aid.hex().upper()}")]


def _next_batch(state: SessionState) -> tuple[SessionState, list[Step]]:
    """Protect the queued commands up to and including the next GET STATUS."""
    if not state.queue:
        return replace(state, phase="done", outcome=Outcome(True, "done", state.status)), []
    assert state.channel is not None
    channel, sent, queue = state.channel, [], list(state.queue)
    while queue:
        planned = queue.pop(0)
        is_auth = planned.reads == "auth"  # MACed only, not counted (Amendment D 6.2.6)
        channel, wrapped = scp03.wrap_command(channel, planned.apdu, encrypt=not is_auth)
        sent.append((Sent(planned, None if is_auth else channel), wrapped))
        if planned.reads == "status":
            break
    state = replace(state, channel=channel, queue=tuple(queue), sent=tuple(s for s, _ in sent))
    return state, [Step(w, s.planned.label, s.planned.expect) for s, w in sent]


def _fail(state: SessionState, step: str, reason: str, sw: int | None = None) -> SessionState:
    outcome = Outcome(False, f"{step}: {reason}", state.status, step, sw)
    return replace(state, phase="done", sent=(), queue=(), channel=None, outcome=outcome)


def run(script: Script, host_challenge: bytes, relay: Callable[[list[Step]], list[Response]],
        card_keys: Callable[[bytes], scp03.StaticKeys]) -> Outcome:
    """Drive a whole session through ``relay`` (for local use and tests; the platform calls
    ``start``/``advance`` with the terminal's relayed responses instead)."""
    state, steps = start(script, host_challenge)
    while not state.done:
        state, steps = advance(state, relay(steps), card_keys)
    assert state.outcome is not None
    return state.outcome


def relay(transmit: Callable[[bytes], Response], steps: Sequence[Step]) -> list[Response]:
    """What a terminal does with a batch: send the steps in order, stop after the first status
    word a step does not expect, return the responses (it needs no key and checks nothing)."""
    out: list[Response] = []
    for step in steps:
        data, sw = transmit(step.apdu)
        out.append((data, sw))
        if sw not in step.expect:
            break
    return out
