"""The bridge's handler: CardBus requests in, ISO 8583 to the host, sealed answers out.

``Bridge`` holds the link, the HSM facade and the issuer checks; its methods take the two
tables (a mapping each: PAN token -> the card's recent answers, partition -> chain head) as
arguments, so the Faust app around it stays a few lines and a test can drive it with dicts.
Idempotent by event id: a request already answered gets its stored decision again, and one
still in flight is waited for, so the host sees each request once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.providers.decide import decision_hash, derived_id
from agents.providers.iso8583 import messages
from agents.providers.iso8583.fields import Doc
from agents.providers.iso8583.hsm import BridgeHsm
from agents.providers.iso8583.link import Link
from agents.providers.issuer import HsmIssuer
from agents.providers.state import ChainHead, PartitionState
from cardbus.errors import CryptoError, DecodeError, IsoLinkError
from cardbus.logs import get_logger
from cardbus.response_codes import (
    APPROVED,
    DO_NOT_HONOUR,
    INVALID_CARD,
    ISSUER_UNAVAILABLE,
    NO_ORIGINAL,
    SYSTEM_ERROR,
)
from schemas.base import EncryptedBlob, new_event_id
from schemas.deadletters import EventDeadLettered, original_fields
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    ReversalCompleted,
    ReversalRequested,
)

log = get_logger("iso8583.bridge")

KEPT_PER_CARD = 64
REVERSAL_WAIT_S = 10.0
_LONG_DIGITS = re.compile(rb"\d{12,}")

Table = MutableMapping[str, Any]
Publish = Callable[[str, Any], Awaitable[None]]


def masked_frame(raw: bytes) -> bytes:
    """A host frame fit for a dead letter: every run of 12+ ASCII digits (a PAN) starred."""
    return _LONG_DIGITS.sub(lambda m: b"*" * len(m.group()), raw)


def _host_answer(code: str) -> messages.HostAnswer:
    return messages.HostAnswer(host_code="--", response_code=code, auth_code=None, arpc=None)


@dataclass
class Bridge:
    """One bridge worker's handler."""

    provider_id: str
    hsm: BridgeHsm
    issuer: HsmIssuer
    link: Link
    publish: Publish  # (key, sealed event) -> on cardbus.provider-results
    clock: Any = field(default=lambda: datetime.now(UTC))
    _inflight: dict[str, asyncio.Future[AuthorizationDecided]] = field(default_factory=dict)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    # -- authorizations ----------------------------------------------------------------------

    async def authorize(self, req: AuthorizationRequested, partition: int, answers: Table,
                        chains: Table) -> AuthorizationDecided:
        """Publish the sealed decision for ``req``: stored, awaited, or asked of the host."""
        token = req.card.pan_token
        stored = (answers.get(token) or {}).get(req.event_id)
        if stored is not None:
            decision = AuthorizationDecided.model_validate(stored["decision"])
            await self.publish(token, decision)
            return decision
        running = self._inflight.get(req.event_id)
        if running is not None:
            decision = await asyncio.shield(running)
            await self.publish(token, decision)
            return decision
        fut: asyncio.Future[AuthorizationDecided] = asyncio.get_running_loop().create_future()
        self._inflight[req.event_id] = fut
        try:
            answer, sent = await self._ask_host(req)
            # one partition's chain is extended and published in order
            async with self._locks.setdefault(partition, asyncio.Lock()):
                decision = self._record(req, answer, sent, partition, answers, chains)
                await self.publish(token, decision)
            (log.debug if decision.approved else log.info)(
                "authorization decided", code=decision.response_code,
                host_code=answer.host_code, masked_pan=req.card.masked_pan)
            fut.set_result(decision)
            return decision
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a waiting duplicate re-raises it
            raise
        finally:
            self._inflight.pop(req.event_id, None)

    async def _ask_host(self, req: AuthorizationRequested
                        ) -> tuple[messages.HostAnswer, Doc | None]:
        try:
            self.issuer.verify_platform(req)
        except CryptoError:
            return _host_answer(DO_NOT_HONOUR), None
        ctx = req.correlation_id
        try:
            if self.hsm.pan_token(req.card.pan_encrypted, ctx) != req.card.pan_token:
                return _host_answer(INVALID_CARD), None
            pan = self.hsm.pan_for_host(req.card.pan_encrypted, ctx)
            pin_block = (self.hsm.pin_block_for_host(req.pin_key_id, bytes.fromhex(
                req.pin_block), req.card.pan_encrypted, ctx)
                if req.pin_block is not None and req.pin_key_id is not None else None)
        except CryptoError:
            return _host_answer(INVALID_CARD), None
        doc = messages.authorization(req, pan=pan, pin_block=pin_block,
                                     stan=self.link.next_stan(), sent_at=self.clock())
        try:
            raw = await self.link.authorize(doc)
        except IsoLinkError as exc:
            log.warning("no host answer: 91, reversal queued", reason=str(exc))
            return _host_answer(ISSUER_UNAVAILABLE), doc
        try:
            return messages.read_answer(raw), doc
        except DecodeError as exc:
            log.warning("host answer unusable: 96, reversing it", reason=exc.reason)
            self.link.reverse(doc, reason="bad_answer")
            return _host_answer(SYSTEM_ERROR), doc

    def _record(self, req: AuthorizationRequested, answer: messages.HostAnswer,
                sent: Doc | None, partition: int, answers: Table,
                chains: Table) -> AuthorizationDecided:
        """Seal the decision, extend the partition's chain, remember it (no await: one step)."""
        raw = chains.get(f"p{partition}")  # the partition's record (no batch: the host's)
        part = (PartitionState.model_validate(raw) if raw
                else PartitionState(chain=ChainHead(chain_id=f"{self.provider_id}.p{partition}")))
        head = part.chain
        unsealed = messages.decision(req, answer, provider_id=self.provider_id,
                                     chain_id=head.chain_id, sequence=head.sequence + 1,
                                     prev_hash=head.last_hash)
        decision = self.hsm.sign_event(unsealed)
        chains[f"p{partition}"] = part.model_copy(update={"chain": ChainHead(
            chain_id=head.chain_id, sequence=decision.sequence,
            last_hash=decision_hash(decision))}).model_dump(mode="json")
        kept = dict(answers.get(req.card.pan_token) or {})
        kept[req.event_id] = {
            "decision": decision.model_dump(mode="json"),
            "sent": {k: v for k, v in (sent or {}).items() if k not in ("2", "52", "55")},
            "pan_encrypted": req.card.pan_encrypted.model_dump(mode="json"),
            "context": req.correlation_id}
        answers[req.card.pan_token] = dict(list(kept.items())[-KEPT_PER_CARD:])
        return decision

    # -- reversals ---------------------------------------------------------------------------

    async def reverse(self, rev: ReversalRequested, answers: Table) -> ReversalCompleted | None:
        """Reverse at the host what the platform asks to undo and publish the sealed answer;
        None while the host has not answered (the link keeps repeating the 0401)."""
        answer = await self._reverse(rev, answers)
        if answer is not None:
            log.info("reversal done", reversed=answer.reversed, code=answer.response_code)
            await self.publish(rev.pan_token, answer)
        return answer

    async def _reverse(self, rev: ReversalRequested, answers: Table
                       ) -> ReversalCompleted | None:
        self.issuer.verify_platform(rev)
        entry = (answers.get(rev.pan_token) or {}).get(rev.original_event_id)
        decision = (AuthorizationDecided.model_validate(entry["decision"]) if entry else None)
        if entry is None or decision is None:
            return self._reversed(rev, NO_ORIGINAL, reversed_=False)
        if not decision.approved:
            return self._reversed(rev, APPROVED, reversed_=True)  # nothing was authorized
        blob = EncryptedBlob.model_validate(entry["pan_encrypted"])
        original = {**entry["sent"], "2": self.hsm.pan_for_host(blob, entry["context"])}
        done = self.link.reverse(original, reason=rev.reason)
        try:
            answer = await asyncio.wait_for(asyncio.shield(done), REVERSAL_WAIT_S)
        except TimeoutError:
            log.warning("reversal not answered yet: the link keeps repeating it")
            return None
        ok = answer.get("39") == "00"
        return self._reversed(rev, APPROVED if ok else NO_ORIGINAL, reversed_=ok)

    def _reversed(self, rev: ReversalRequested, code: str, *, reversed_: bool
                  ) -> ReversalCompleted:
        return self.hsm.sign_event(ReversalCompleted(
            event_id=derived_id("reversal", rev.event_id), correlation_id=rev.correlation_id,
            occurred_at=rev.occurred_at, producer=f"provider:{self.provider_id}",
            provider_id=self.provider_id, original_event_id=rev.original_event_id,
            pan_token=rev.pan_token, amount=rev.amount, reversed=reversed_,
            response_code=code))

    # -- what the host sent that fits nothing ------------------------------------------------

    def dead_letter(self, raw: bytes, reason: str, number: int) -> EventDeadLettered:
        """A dead letter for a host frame (digit runs masked: a PAN never leaves)."""
        return EventDeadLettered(
            event_id=new_event_id(), correlation_id=f"iso8583.{self.provider_id}",
            occurred_at=self.clock(), producer=f"provider:{self.provider_id}",
            reason=reason[:1000], error_code="iso_frame", field=None,
            original_topic=f"iso8583.{self.provider_id}.host", original_partition=0,
            original_offset=number, **original_fields(masked_frame(raw)))
