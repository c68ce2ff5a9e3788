"""A transit operator prepares a new e-purse for the platform's card manager to install on a
bank card (``PursePersonalisationRequested`` -> ``PursePersonalisationPrepared``).

The purse's number follows from the request (so a redelivered request gets the same purse),
its token from the number, its load and TAC keys from the token, as for the operator's own
purses (``ProviderHsm.transit_card_keys``): the operator authorizes its loads like any other.
The number travels encrypted under the operator's PAN key (bound to the session id), the keys
in TR-31 blocks under the operator<->platform KBPK: only the platform's HSM opens them, to
write them to the card under the card's Key-DEK. The operator keeps the purse (its token) in
its purse records from now on, with the answer, which a repeated request gets again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from agents.providers.issuer import HsmIssuer
from agents.providers.transit import Purse
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.issued import SealedPurse
from schemas.base import Event, luhn_ok
from schemas.cardmgmt import PursePersonalisationPrepared, PursePersonalisationRequested
from schemas.providers import ProvisionedKey


class PurseMaker(Protocol):
    """What the operator's HSM does here."""

    provider_id: str

    def verify_platform(self, event: Event) -> None: ...

    def purse_for_platform(self, card_no: str, context: str) -> SealedPurse: ...

    def seal(self, event: Event) -> Event: ...


@dataclass(frozen=True)
class Prepared:
    """The purse record to keep (None: nothing changes) and the answer to publish."""

    purse: Purse | None
    answer: PursePersonalisationPrepared


def purse_number(card_bin: str, request_event_id: str, length: int = 16) -> str:
    """The new purse's number: the operator's BIN, digits from the request, a Luhn digit."""
    digest = int.from_bytes(hashlib.sha256(f"purse:{request_event_id}".encode()).digest(), "big")
    body = card_bin + str(digest)[: length - len(card_bin) - 1]
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def prepare(req: PursePersonalisationRequested, known: Purse | None, *, card_bin: str,
            label: str, crypto: PurseMaker) -> Prepared:
    """The sealed purse for the platform (``CryptoError`` if the request is not the
    platform's: dead letter, no answer)."""
    if known is not None and req.event_id in known.done:
        return Prepared(None, PursePersonalisationPrepared.model_validate(
            known.done[req.event_id]))
    crypto.verify_platform(req)
    sealed = crypto.purse_for_platform(purse_number(card_bin, req.event_id), req.correlation_id)
    ref = req.event_id[:16]

    def key(name: str, kcv: str, block: str) -> ProvisionedKey:
        return ProvisionedKey(key_id=f"purse-{name}.{ref}", usage="card_perso",
                              algorithm="TDES", kcv=kcv, key_block=block)

    answer = PursePersonalisationPrepared(
        event_id=hashlib.sha256(f"purse:prepared:{req.event_id}".encode()).hexdigest()[:32],
        correlation_id=req.correlation_id, occurred_at=req.occurred_at,
        producer=f"provider:{crypto.provider_id}", operator_id=crypto.provider_id,
        request_event_id=req.event_id, card_token=sealed.card_token, label=label,
        number_encrypted=sealed.number, load_key=key("dlk", sealed.load_kcv, sealed.load_block),
        tac_key=key("dtk", sealed.tac_kcv, sealed.tac_block))
    signed = crypto.seal(answer)
    assert isinstance(signed, PursePersonalisationPrepared)
    purse = known or Purse(card_token=sealed.card_token)
    return Prepared(purse.model_copy(update={
        "done": {**purse.done, req.event_id: signed.model_dump(mode="json")}}), signed)


class HsmPurses:
    """``PurseMaker`` over the operator's ``ProviderHsm`` (the platform's seal checked like
    every request's)."""

    def __init__(self, hsm: ProviderHsm, issuer: HsmIssuer) -> None:
        self.hsm = hsm
        self.provider_id = hsm.provider_id
        self._issuer = issuer

    def verify_platform(self, event: Event) -> None:
        self._issuer.verify_platform(event)

    def purse_for_platform(self, card_no: str, context: str) -> SealedPurse:
        return self.hsm.purse_for_platform(card_no, context)

    def seal(self, event: Event) -> Event:
        return self.hsm.sign_event(event)
