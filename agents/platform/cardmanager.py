"""The platform's card-management handlers: issuers' policies, terminals' requests and relayed
card answers, transit operators' purses. Thin: decode, call ``agents.platform.cardsessions``,
send. No Kafka here (the Faust app passes a sender, a unit test a list).

Policies are kept as the issuers sealed them (table ``card-policies``, every worker holds all
of them) and checked against the issuer's registered key when a session uses them. Sessions
live in ``sessions`` (this worker's memory, never a table: they hold the card's channel keys).
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from agents.platform import cardsessions
from agents.platform.cardsessions import COMMANDS, Live, Opening
from agents.platform.decide import Out, Route, TerminalRecord
from cardbus.crypto.hsm import PlatformHsm
from cardbus.logs import bind_correlation, get_logger
from schemas.base import Event
from schemas.cardmgmt import (
    CardManagementRequested,
    CardPolicyPublished,
    CardResponsesRelayed,
    PursePersonalisationPrepared,
)
from streams import codec
from streams.topics import CARD_COMMANDS, CARD_MANAGEMENT, CARD_POLICIES, provider_requests_topic

log = get_logger("platform.cards")

Send = Callable[[str, str | None, Event], Any]


class CardManager:
    """The card manager's handlers over the policies table and the live sessions."""

    def __init__(self, policies: MutableMapping[str, Any], hsm: PlatformHsm, send: Send, *,
                 routes: Callable[[], dict[str, Route]],
                 terminal: Callable[[str], TerminalRecord | None],
                 challenge: Callable[[int], bytes] = os.urandom) -> None:
        self.policies = policies
        self.hsm = hsm
        self.send = send
        self.routes = routes
        self.terminal = terminal
        self.challenge = challenge  # the SCP03 host challenge: the only randomness here
        self.sessions: dict[str, Live] = {}

    async def on_policy(self, record: Any) -> None:
        """``cardbus.card-policies``: an issuer's policy, kept as sealed (checked at use)."""
        ev = codec.decode_as(CARD_POLICIES.name, record.value, CardPolicyPublished)
        self.policies[ev.issuer_id] = ev.model_dump(mode="json")
        log.info("card policy", issuer=ev.issuer_id, installable=list(ev.installable))

    def policy(self, issuer_id: str) -> CardPolicyPublished | None:
        raw = self.policies.get(issuer_id)
        return CardPolicyPublished.model_validate(raw) if raw else None

    async def on_message(self, record: Any) -> None:
        """``cardbus.card-management``: a terminal's request, or the card's relayed answers."""
        ev = codec.decode_as(CARD_MANAGEMENT.name, record.value,
                             (CardManagementRequested, CardResponsesRelayed))
        at = datetime.fromtimestamp(record.timestamp, UTC)
        self._forget_old(at)
        sid = ev.correlation_id
        with bind_correlation(sid, terminal=ev.terminal_id):
            live = self.sessions.get(sid)
            if isinstance(ev, CardManagementRequested):
                if live is not None:
                    return  # the same request again: the session is under way
                routes = self.routes()
                new, out = cardsessions.open_session(ev, Opening(
                    self.terminal(ev.terminal_id), routes.get(ev.issuer_id),
                    self.policy(ev.issuer_id), routes, at, self.challenge(8)), self.hsm)
                log.info("card management requested", issuer=ev.issuer_id,
                         operations=[op.action for op in ev.operations])
            elif live is None:
                new, out = None, cardsessions.unknown_session(ev, self.hsm, at)
                log.warning("answers for a session not held here", batch=ev.batch)
            else:
                new, out = cardsessions.take_responses(live, ev, self.hsm, at)
            await self._keep(sid, new, out)

    async def on_purse(self, ev: PursePersonalisationPrepared, received_at: datetime) -> None:
        """``cardbus.provider-results``: the operator's purse for a session of this worker."""
        with bind_correlation(ev.correlation_id, provider=ev.operator_id):
            live = self.sessions.get(ev.correlation_id)
            if live is None:
                log.warning("purse for a session not held here (restarted or expired)")
                return
            new, out = cardsessions.take_purse(live, ev, self.routes().get(ev.operator_id),
                                               self.hsm, self.challenge(8), received_at)
            await self._keep(ev.correlation_id, new, out)

    async def _keep(self, sid: str, new: Live | None, out: Out) -> None:
        if new is None:
            self.sessions.pop(sid, None)
        else:
            self.sessions[sid] = new
        for role, key, event in out.events:
            if role == COMMANDS:
                await self.send(CARD_COMMANDS.name, key, event)
                if event.type == "CardManagementCompleted":
                    log.info("card management ended", ok=getattr(event, "ok", None),
                             reason=getattr(event, "reason", None))
            else:
                await self.send(provider_requests_topic(role.split(":", 1)[1]), key, event)

    def _forget_old(self, now: datetime) -> None:
        for sid in [s for s, live in self.sessions.items() if live.expired(now)]:
            del self.sessions[sid]
            log.warning("card management session expired", session=sid)
