"""Card-management events: the platform as the cards' application manager (GlobalPlatform).

Flow (the correlation id is the session id, every topic keyed by it or by the terminal):

- an issuer's ``CardPolicyPublished`` (``cardbus.card-policies``, compacted, keyed by issuer):
  what the platform may do to its cards;
- the terminal's ``CardManagementRequested`` (``cardbus.card-management``, terminal MAC): the
  card in one of its readers, its issuer, the operations;
- for an install, the platform asks the application's provider to prepare it:
  ``PursePersonalisationRequested`` (``cardbus.provider.<operator>.requests``, platform
  signature) -> ``PursePersonalisationPrepared`` (``cardbus.provider-results``, operator
  signature: the purse's token, its number under the operator's PAN key, its keys in TR-31);
- the platform runs the SCP03 secure channel: ``CardCommandsIssued`` (``cardbus.card-commands``,
  keyed by terminal, platform signature), APDUs already protected for the card; the terminal
  relays them and answers ``CardResponsesRelayed`` (``cardbus.card-management``, terminal
  MAC); until ``CardManagementCompleted`` (``cardbus.card-commands``) says how it ended.

APDUs travel in base64, never hex: hex of random bytes may hold a Luhn-valid 13-19 digit run
that any PAN scanner (the audit's) flags. The terminal holds no issuer key: the APDUs are MACed
(and their data encrypted) under the card's session keys, which only the platform derives.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from schemas.base import B64, EncryptedBlob, Event, PanToken, ProviderId, TerminalId
from schemas.providers import ProvisionedKey
from schemas.values import Aid, Count, Text

_FROZEN = ConfigDict(frozen=True, extra="forbid")

AppName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9\-]{0,31}$")]
"""An application of the platform's catalogue (``transit``)."""

StatusWord = Annotated[StrictInt, Field(ge=0, le=0xFFFF)]
"""An ISO 7816 status word (``0x9000``)."""

MAX_STEPS = 64

Action = Literal["list", "install", "lock", "unlock", "delete", "lock_card", "unlock_card"]


class CardPolicyPublished(Event):
    """An issuer's card-management policy: which catalogue applications the platform may
    install on its cards, whether it may lock or delete applications or lock the card, and the
    applications it must never touch (its own payment application)."""

    SEALED_BY: ClassVar[str] = "issuer identity key"

    type: Literal["CardPolicyPublished"] = "CardPolicyPublished"
    schema_version: Literal[1] = 1

    issuer_id: ProviderId
    installable: tuple[AppName, ...] = ()
    may_lock_apps: bool = True
    may_delete_apps: bool = True
    may_lock_card: bool = False
    protected_aids: tuple[Aid, ...] = ()


class CardOperation(BaseModel):
    """One thing to do to the card: ``install`` names a catalogue application (``app``);
    ``lock``, ``unlock`` and ``delete`` name an application instance (``aid``)."""

    model_config = _FROZEN

    action: Action
    app: AppName | None = None
    aid: Aid | None = None

    @model_validator(mode="after")
    def _target(self) -> CardOperation:
        wants_app, wants_aid = self.action == "install", self.action in ("lock", "unlock",
                                                                         "delete")
        if (self.app is not None) != wants_app or (self.aid is not None) != wants_aid:
            raise ValueError("operation: install names an app, lock/unlock/delete an aid, "
                             "the others neither")
        return self


class CardManagementRequested(Event):
    """A terminal asks the platform to manage the card in one of its readers."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["CardManagementRequested"] = "CardManagementRequested"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    issuer_id: ProviderId = Field(description="the card's issuer (whose security domain keys "
                                              "the card's cryptogram must verify under)")
    operations: tuple[CardOperation, ...] = Field(min_length=1, max_length=8)


class RelayStep(BaseModel):
    """One APDU to relay, and the status words after which the relay goes on."""

    model_config = _FROZEN

    apdu: B64 = Field(max_length=400)
    label: Text
    expect: tuple[StatusWord, ...] = Field(min_length=1, max_length=4)


class CardCommandsIssued(Event):
    """The next batch of APDUs of a session, protected for the card by the platform."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["CardCommandsIssued"] = "CardCommandsIssued"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    batch: Annotated[StrictInt, Field(ge=1)]
    steps: tuple[RelayStep, ...] = Field(min_length=1, max_length=MAX_STEPS)


class RelayedResponse(BaseModel):
    """The card's answer to one relayed APDU."""

    model_config = _FROZEN

    data: B64 = Field(default="", max_length=400)
    sw: StatusWord


class CardResponsesRelayed(Event):
    """The card's answers to a batch, in order; fewer than the batch's steps when the relay
    stopped at a status word a step did not expect."""

    SEALED_BY: ClassVar[str] = "terminal MAC key"

    type: Literal["CardResponsesRelayed"] = "CardResponsesRelayed"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    batch: Annotated[StrictInt, Field(ge=1)]
    responses: tuple[RelayedResponse, ...] = Field(max_length=MAX_STEPS)


class CardApplication(BaseModel):
    """One entry of the card's registry as GET STATUS reported it."""

    model_config = _FROZEN

    aid: Aid
    kind: Literal["security_domain", "application", "load_file"]
    life: Annotated[StrictInt, Field(ge=0, le=0xFF)]
    locked: bool = False


class CardManagementCompleted(Event):
    """How a session ended, and what is on the card now (from its last GET STATUS)."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["CardManagementCompleted"] = "CardManagementCompleted"
    schema_version: Literal[1] = 1

    terminal_id: TerminalId
    issuer_id: ProviderId
    ok: bool
    reason: Text
    failed_step: Text | None = None
    sw: StatusWord | None = None
    card_life: Literal["OP_READY", "INITIALIZED", "SECURED", "CARD_LOCKED",
                       "TERMINATED"] | None = None
    applications: tuple[CardApplication, ...] = Field(default=(), max_length=MAX_STEPS)
    installed: tuple[Aid, ...] = Field(default=(), description="instances this session "
                                                               "installed")
    steps_relayed: Count = 0


class PursePersonalisationRequested(Event):
    """The platform asks a transit operator for a new e-purse to install on a card."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["PursePersonalisationRequested"] = "PursePersonalisationRequested"
    schema_version: Literal[1] = 1

    operator_id: ProviderId
    issuer_id: ProviderId
    terminal_id: TerminalId
    app: AppName


class PursePersonalisationPrepared(Event):
    """A transit operator's new e-purse for the platform to install: the token that stands for
    it on the bus (its loads are authorized by it), its number encrypted under the operator's
    PAN key (bound to the session id), its load and TAC keys as TR-31 blocks (E6, exportable
    only under the card's Key-DEK)."""

    SEALED_BY: ClassVar[str] = "operator identity key"

    type: Literal["PursePersonalisationPrepared"] = "PursePersonalisationPrepared"
    schema_version: Literal[1] = 1

    operator_id: ProviderId
    request_event_id: str
    card_token: PanToken
    label: Text
    number_encrypted: EncryptedBlob
    load_key: ProvisionedKey
    tac_key: ProvisionedKey

    @model_validator(mode="after")
    def _card_keys(self) -> PursePersonalisationPrepared:
        if {self.load_key.usage, self.tac_key.usage} != {"card_perso"}:
            raise ValueError("load_key, tac_key: a purse's keys travel as card_perso blocks")
        return self
