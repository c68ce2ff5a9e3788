"""Card-management sessions at the platform, as pure steps: ``(session, event) -> (session,
events out)``. No Kafka and no clock: times come from the inputs, the host challenge from the
caller (the handler draws it).

A terminal's ``CardManagementRequested`` (terminal MAC) names the card's issuer and the
operations. The issuer's policy (its sealed ``CardPolicyPublished``) decides what is allowed
(``agents.platform.cardmgmt``); an install of a catalogue application first asks its provider
for the application's personalisation (``PursePersonalisationRequested``), which the
platform's HSM opens (``PlatformHsm.open_purse``). The secure channel is
``cardbus.gp.session``: the platform holds the issuer's security-domain master (TR-31) and
derives the card's keys from the card's answer to INITIALIZE UPDATE; each batch of protected
APDUs goes to the terminal (``CardCommandsIssued``, platform signature), whose relayed answers
(``CardResponsesRelayed``, terminal MAC) advance it, to ``CardManagementCompleted``.

The session (its channel keys included) lives in the worker's memory only, keyed by session id
(the requests, the answers and the provider's personalisation all land in one partition): a
worker that restarts or loses the partition loses it, and the terminal's next answer is told
so (the user runs the command again).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from agents.platform import cardmgmt
from agents.platform.decide import Out, Rejected, Route, TerminalRecord, derived_id
from cardbus.crypto import scp03
from cardbus.crypto.hsm import PlatformHsm
from cardbus.crypto.issued import SealedPurse
from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.signing import verify_event
from cardbus.errors import CardBusError, CardManagementRefused, CryptoError
from cardbus.gp import session
from cardbus.gp.card import STATUS_APPS, STATUS_ISD, STATUS_LOAD_FILES_MODULES
from schemas.base import header
from schemas.cardmgmt import (
    CardApplication,
    CardCommandsIssued,
    CardManagementCompleted,
    CardManagementRequested,
    CardOperation,
    CardPolicyPublished,
    CardResponsesRelayed,
    PursePersonalisationPrepared,
    PursePersonalisationRequested,
    RelayStep,
)

SESSION_TTL = timedelta(minutes=5)
"""How long a session may wait for the terminal (or the provider) before it is forgotten."""

COMMANDS = "card-commands"  # the role of ``cardbus.card-commands`` in ``Out``


@dataclass(frozen=True)
class Live:
    """One session in the worker's memory."""

    session_id: str
    terminal_id: str
    issuer_id: str
    requests: tuple[cardmgmt.Request, ...]
    policy: cardmgmt.IssuerPolicy
    started_at: datetime
    gp: session.SessionState | None = field(default=None, repr=False)
    batch: int = 0
    relayed: int = 0
    purse_request: str | None = None  # event id of the PursePersonalisationRequested

    def expired(self, now: datetime) -> bool:
        return now - self.started_at > SESSION_TTL


def policy_of(ev: CardPolicyPublished, route: Route | None) -> cardmgmt.IssuerPolicy:
    """The issuer's policy, if sealed by the issuer's registered identity key."""
    if route is None or route.provider_id != ev.issuer_id:
        raise CardManagementRefused(f"no registered issuer {ev.issuer_id}")
    try:
        verify_event(ev, lambda kid: route.verifier() if kid == route.identity_key_id else None)
    except CryptoError as exc:
        raise CardManagementRefused(f"policy of {ev.issuer_id}: {exc}") from None
    return cardmgmt.IssuerPolicy(
        ev.issuer_id, frozenset(ev.installable), ev.may_lock_apps, ev.may_delete_apps,
        ev.may_lock_card, frozenset(bytes.fromhex(a) for a in ev.protected_aids))


def _request(op: CardOperation) -> cardmgmt.Request:
    if op.action == "install":
        assert op.app is not None
        return cardmgmt.InstallApp(op.app)
    if op.action in ("lock", "unlock", "delete"):
        assert op.aid is not None
        aid = bytes.fromhex(op.aid)
        return (cardmgmt.DeleteApp(aid) if op.action == "delete"
                else cardmgmt.LockApp(aid, lock=op.action == "lock"))
    if op.action in ("lock_card", "unlock_card"):
        return cardmgmt.LockCard(lock=op.action == "lock_card")
    return cardmgmt.ListApps()


@dataclass(frozen=True)
class Opening:
    """What ``open_session`` needs to know besides the request."""

    terminal: TerminalRecord | None
    issuer: Route | None
    policy: CardPolicyPublished | None
    routes: dict[str, Route]
    received_at: datetime
    host_challenge: bytes


def open_session(req: CardManagementRequested, ctx: Opening, hsm: PlatformHsm
                 ) -> tuple[Live | None, Out]:
    """A terminal's request: checked, then the provider asked for a purse or the secure
    channel opened. A request whose terminal MAC does not verify raises ``Rejected``."""
    if ctx.terminal is None:
        raise Rejected(f"card management from unknown terminal {req.terminal_id}")
    try:
        hsm.verify_terminal_mac(req.terminal_id, req)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {req.event_id}: {exc}") from None
    at = ctx.received_at

    def refuse(reason: str) -> tuple[None, Out]:
        return None, completed(req.correlation_id, req.terminal_id, req.issuer_id,
                               session.Outcome(False, reason), at, hsm)

    if ctx.terminal.status != "active":
        return refuse("terminal not permitted (suspended)")
    if ctx.issuer is None or ctx.issuer.kind != "bank" or not ctx.issuer.keys_ready:
        return refuse(f"{req.issuer_id} is not an issuer the platform holds keys of")
    if ctx.policy is None:
        return refuse(f"{req.issuer_id} has published no card-management policy")
    requests = tuple(_request(op) for op in req.operations)
    try:
        policy = policy_of(ctx.policy, ctx.issuer)
        cardmgmt.script_for(policy, requests)  # the policy allows it, or says why not
    except CardManagementRefused as exc:
        return refuse(str(exc))
    live = Live(req.correlation_id, req.terminal_id, req.issuer_id, requests, policy, at)
    installs = [r for r in requests if isinstance(r, cardmgmt.InstallApp)]
    if not installs:
        return start(live, hsm, ctx.host_challenge, at)
    template = cardmgmt.CATALOGUE[installs[0].template]
    operator = ctx.routes.get(template.provider)
    if len(installs) > 1 or operator is None or operator.kind != "transit" \
            or not operator.keys_ready:
        return refuse(f"{template.provider} cannot prepare {template.name} now"
                      if len(installs) == 1 else "one install per session")
    ask = hsm.sign_event(PursePersonalisationRequested(
        **header("platform", live.session_id, at,
                 event_id=derived_id("cm:purse", req.event_id)),
        operator_id=operator.provider_id, issuer_id=live.issuer_id,
        terminal_id=live.terminal_id, app=template.name))
    out = Out()
    out.add(f"provider:{operator.provider_id}", live.session_id, ask)
    return replace(live, purse_request=ask.event_id), out


def take_purse(live: Live, ev: PursePersonalisationPrepared, operator: Route | None,
               hsm: PlatformHsm, host_challenge: bytes, at: datetime) -> tuple[Live | None, Out]:
    """The operator's purse: opened inside the HSM, then the secure channel opened."""
    if live.purse_request is None or live.gp is not None:
        return live, Out()  # already taken (a redelivery)
    if ev.request_event_id != live.purse_request or operator is None \
            or operator.provider_id != ev.operator_id:
        raise Rejected(f"purse {ev.event_id} answers no request of session {live.session_id}")
    try:
        verify_event(ev, lambda k: operator.verifier() if k == operator.identity_key_id
                     else None)
        sealed = SealedPurse(ev.card_token, ev.number_encrypted, ev.load_key.key_block,
                             ev.tac_key.key_block, ev.load_key.kcv, ev.tac_key.kcv)
        perso = hsm.open_purse(ev.operator_id, sealed, live.session_id, ev.label)
    except CardBusError as exc:
        return _end(live, session.Outcome(False, f"purse from {ev.operator_id}: {exc}"), at,
                    hsm)
    requests = tuple(replace(r, personalisation=perso)
                     if isinstance(r, cardmgmt.InstallApp) else r for r in live.requests)
    return start(replace(live, requests=requests, purse_request=None), hsm, host_challenge, at)


def start(live: Live, hsm: PlatformHsm, host_challenge: bytes, at: datetime
          ) -> tuple[Live | None, Out]:
    """SELECT the card's security domain and INITIALIZE UPDATE: the first batch."""
    try:
        script = cardmgmt.script_for(live.policy, live.requests)
        state, steps = session.start(script, host_challenge)
    except CardBusError as exc:
        return _end(live, session.Outcome(False, str(exc)), at, hsm)
    return _batch(replace(live, gp=state), steps, at, hsm)


def take_responses(live: Live, ev: CardResponsesRelayed, hsm: PlatformHsm,
                   at: datetime) -> tuple[Live | None, Out]:
    """The card's answers to the last batch: the next batch, or the end."""
    if ev.terminal_id != live.terminal_id:
        raise Rejected(f"answers of session {live.session_id} from {ev.terminal_id}, not "
                       f"{live.terminal_id}")
    try:
        hsm.verify_terminal_mac(ev.terminal_id, ev)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {ev.event_id}: {exc}") from None
    if live.gp is None or ev.batch != live.batch:
        return live, Out()  # a redelivered (or early) batch: already answered
    responses = [(b64d(r.data), r.sw) for r in ev.responses]

    def card_keys(kdd: bytes) -> scp03.StaticKeys:
        return hsm.isd_card_keys(live.issuer_id, kdd)

    try:
        state, steps = session.advance(live.gp, responses, card_keys)
    except CardBusError as exc:  # no security-domain key for the issuer, ...
        return _end(live, session.Outcome(False, f"platform: {exc}"), at, hsm)
    live = replace(live, gp=state, relayed=live.relayed + len(responses))
    if state.done:
        assert state.outcome is not None
        return _end(live, state.outcome, at, hsm)
    return _batch(live, steps, at, hsm)


def _batch(live: Live, steps: list[session.Step], at: datetime, hsm: PlatformHsm
           ) -> tuple[Live, Out]:
    n = live.batch + 1
    ev = hsm.sign_event(CardCommandsIssued(
        **header("platform", live.session_id, at,
                 event_id=derived_id(f"cm:batch:{n}", live.session_id)),
        terminal_id=live.terminal_id, batch=n,
        steps=tuple(RelayStep(apdu=b64e(s.apdu), label=s.label[:200], expect=s.expect)
                    for s in steps)))
    out = Out()
    out.add(COMMANDS, live.terminal_id, ev)
    return replace(live, batch=n), out


def _end(live: Live, outcome: session.Outcome, at: datetime, hsm: PlatformHsm
         ) -> tuple[None, Out]:
    installed = tuple(cardmgmt.CATALOGUE[r.template].instance.hex().upper()
                      for r in live.requests if isinstance(r, cardmgmt.InstallApp)
                      ) if outcome.ok else ()
    return None, completed(live.session_id, live.terminal_id, live.issuer_id, outcome, at, hsm,
                           installed=installed, relayed=live.relayed)


_KINDS = {STATUS_ISD: "security_domain", STATUS_APPS: "application",
          STATUS_LOAD_FILES_MODULES: "load_file"}


def completed(session_id: str, terminal_id: str, issuer_id: str, outcome: session.Outcome,
              at: datetime, hsm: PlatformHsm, *, installed: tuple[str, ...] = (),
              relayed: int = 0, cause: str | None = None) -> Out:
    """The signed end of a session, with the card's registry as it reported it (its id from
    the session, or from ``cause``: an event answered outside a session)."""
    apps = tuple(CardApplication(aid=e.aid.hex().upper(), kind=_KINDS[p1],  # type: ignore[arg-type]
                                 life=e.life, locked=e.locked)
                 for p1, entries in outcome.status if p1 in _KINDS for e in entries)
    life = outcome.card_life
    ev = hsm.sign_event(CardManagementCompleted(
        **header("platform", session_id, at,
                 event_id=derived_id("cm:done", cause or session_id)),
        terminal_id=terminal_id, issuer_id=issuer_id, ok=outcome.ok,
        reason=outcome.reason[:200] or "failed",
        failed_step=outcome.failed_step[:200] if outcome.failed_step else None, sw=outcome.sw,
        card_life=life.name if life is not None else None,  # type: ignore[arg-type]
        applications=apps[:64], installed=installed, steps_relayed=relayed))
    out = Out()
    out.add(COMMANDS, terminal_id, ev)
    return out


def unknown_session(ev: CardResponsesRelayed, hsm: PlatformHsm, at: datetime) -> Out:
    """Answers for a session this worker does not hold (restarted, rebalanced, expired): the
    terminal is told to start again (once its MAC verifies)."""
    try:
        hsm.verify_terminal_mac(ev.terminal_id, ev)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {ev.event_id}: {exc}") from None
    return completed(ev.correlation_id, ev.terminal_id, "unknown",
                     session.Outcome(False, "the platform no longer holds this session "
                                            "(restarted or expired): run the command again"),
                     at, hsm, cause=ev.event_id)

