"""Every event type by name, their current versions, and discriminated unions over them.

``EVENT_TYPES`` maps the ``type`` tag to its model. ``union_adapter(models)`` builds the pydantic
``TypeAdapter`` over ``Annotated[Union[...], Field(discriminator="type")]`` that a topic decodes
with (``streams.topics`` says which models each topic carries).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter

from schemas.audit import AuditFindingReported
from schemas.base import Event
from schemas.cardmgmt import (
    CardCommandsIssued,
    CardManagementCompleted,
    CardManagementRequested,
    CardPolicyPublished,
    CardResponsesRelayed,
    PursePersonalisationPrepared,
    PursePersonalisationRequested,
)
from schemas.cards import CardTapped
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptApplied, IssuerScriptReported
from schemas.clock import ClockTicked
from schemas.deadletters import EventDeadLettered
from schemas.keys import KeyRevoked
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCancelled,
    PaymentCompleted,
    PaymentRequested,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.providers import ProviderAdmitted, ProviderKeysProvisioned, ProviderRegistered
from schemas.settlement import SettlementBatchClosed
from schemas.terminals import TerminalEnrolled, TerminalKeysIssued, TerminalStatusChanged
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)

ALL_EVENTS: tuple[type[Event], ...] = (
    ProviderRegistered,
    ProviderAdmitted,
    ProviderKeysProvisioned,
    TerminalEnrolled,
    TerminalStatusChanged,
    TerminalKeysIssued,
    CardTapped,
    PaymentRequested,
    PaymentCancelled,
    AuthorizationRequested,
    AuthorizationDecided,
    PaymentCompleted,
    ReversalRequested,
    ReversalCompleted,
    TransitLoadRequested,
    TransitLoadAuthorized,
    TransitLoadApplied,
    TransitLoadAborted,
    TransitLoadConfirmed,
    SettlementBatchClosed,
    EventDeadLettered,
    CardIssued,
    SettlementCutoverRequested,
    ClockTicked,
    CardPolicyPublished,
    CardManagementRequested,
    CardCommandsIssued,
    CardResponsesRelayed,
    CardManagementCompleted,
    PursePersonalisationRequested,
    PursePersonalisationPrepared,
    CardBlocked,
    CardUnblocked,
    IssuerScriptApplied,
    IssuerScriptReported,
    KeyRevoked,
    AuditFindingReported,
)


def _literal(model: type[Event], name: str) -> Any:
    (value,) = get_args(model.model_fields[name].annotation)
    return value


EVENT_TYPES: dict[str, type[Event]] = {_literal(m, "type"): m for m in ALL_EVENTS}
CURRENT_VERSIONS: dict[str, int] = {_literal(m, "type"): _literal(m, "schema_version")
                                    for m in ALL_EVENTS}

if len(EVENT_TYPES) != len(ALL_EVENTS):  # pragma: no cover - a programming error
    raise RuntimeError("two event models share a type tag")


def type_name(model: type[Event]) -> str:
    """The ``type`` tag of ``model``."""
    return str(_literal(model, "type"))


def model_for(name: str) -> type[Event]:
    """The model of the event type ``name`` (KeyError if there is none)."""
    return EVENT_TYPES[name]


@lru_cache(maxsize=64)
def _adapter(models: tuple[type[Event], ...]) -> TypeAdapter[Any]:
    if len(models) == 1:
        return TypeAdapter(models[0])
    union = Union[models]  # type: ignore[valid-type]  # noqa: UP007 - built at runtime
    return TypeAdapter(Annotated[union, Field(discriminator="type")])


def union_adapter(models: Iterable[type[Event]]) -> TypeAdapter[Any]:
    """A (cached) TypeAdapter validating any of ``models``, discriminated by ``type``."""
    ordered = tuple(sorted(set(models), key=type_name))
    if not ordered:
        raise ValueError("a union needs at least one event model")
    return _adapter(ordered)


ANY_EVENT: TypeAdapter[Any] = union_adapter(ALL_EVENTS)
"""Validates any CardBus event (audit replay, dead-letter inspection)."""

