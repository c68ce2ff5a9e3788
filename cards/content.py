"""What a multi-application card holds, persisted: its GlobalPlatform registry (card life cycle,
load files, application instances and their life cycle states), the security domain's
counters (SCP03 sequence counter, failed authentications), and each installed application's
personalisation and counters.

One JSON file per card, ``<card>.gp.state.json`` beside its profile, rewritten atomically
(temporary file, fsync, rename) before the card answers the command that changed it, like
``CardState``. The EMV application keeps its ATC in the card's ``CardState`` file as before.
Personalisation values are secrets (purse keys): the file is 0600, like the profile.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from cardbus.cardprofile import CardProfile
from cardbus.gp.card import EMV_LOAD_FILE, LOAD_FILES, AppKind, AppLife, CardLife
from cards.profile import CardState, _write_private, cards_dir


class Instance(BaseModel):
    """One application instance in the registry."""

    aid: str
    load_file: str
    module: str
    kind: AppKind
    life: int
    privileges: str = "000000"
    perso: dict[str, str] = Field(default_factory=dict)  # DGI (hex) -> value (hex), clear
    counters: dict[str, int] = Field(default_factory=dict)

    @property
    def locked(self) -> bool:
        return bool(self.life & AppLife.LOCKED_BIT)

    @property
    def personalised(self) -> bool:
        return self.life & ~AppLife.LOCKED_BIT == AppLife.PERSONALIZED


class Content(BaseModel):
    """The persisted document."""

    life: int = CardLife.SECURED
    sequence_counter: int = 0
    auth_failures: int = 0  # consecutive failed EXTERNAL AUTHENTICATEs (reset on success)
    auth_failures_total: int = 0
    mac_failures: int = 0  # commands refused for a wrong C-MAC (replays, tampering)
    load_files: list[str] = Field(default_factory=lambda: [f.aid.hex().upper()
                                                           for f in LOAD_FILES])
    instances: list[Instance] = Field(default_factory=list)


class CardContent:
    """The card's content document and its file."""

    def __init__(self, path: Path | None, content: Content) -> None:
        self.path = path
        self.doc = content

    @classmethod
    def for_profile(cls, profile: CardProfile, home: Path | None = None) -> CardContent:
        """Load the card's content, or start it as issued: the EMV application personalised
        from the profile, both load files present."""
        path = (home or cards_dir()) / f"{profile.card_id}.gp.state.json"
        if path.exists():
            return cls(path, Content.model_validate_json(path.read_text()))
        emv = Instance(aid=profile.aid.upper(), load_file=EMV_LOAD_FILE.aid.hex().upper(),
                       module=EMV_LOAD_FILE.module.hex().upper(), kind="emv",
                       life=AppLife.PERSONALIZED)
        return cls(path, Content(instances=[emv]))

    def save(self) -> None:
        """Persist atomically (before the card answers)."""
        if self.path is not None:
            _write_private(self.path, self.doc.model_dump_json(indent=1))

    def instance(self, aid: bytes) -> Instance | None:
        """The instance with exactly this AID."""
        want = aid.hex().upper()
        return next((i for i in self.doc.instances if i.aid == want), None)

    def find(self, partial: bytes) -> Instance | None:
        """SELECT by (partial) name: the first instance whose AID starts with ``partial``."""
        want = partial.hex().upper()
        return next((i for i in self.doc.instances if i.aid.startswith(want)), None)


class InstanceState(CardState):
    """An installed application's counters, kept in the card's content document: the
    ``CardState`` interface the applets use, persisted with the rest of the content."""

    def __init__(self, content: CardContent, instance: Instance, **initial: int) -> None:
        super().__init__(None, **{**initial, **instance.counters})
        self.content = content
        self.aid = instance.aid

    def set(self, durable: bool = True, **values: int) -> None:
        """Update and persist with the rest of the content (always durably: the content
        document holds the purse balances too)."""
        self.values.update(values)
        inst = next(i for i in self.content.doc.instances if i.aid == self.aid)
        inst.counters.update(values)
        self.content.save()
