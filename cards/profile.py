"""Card profiles: what a provider puts on a card when it issues one, and the card's own state.

A profile holds the card's secrets (its ICC master key, its private key, a transit load key)
and its clear PAN: an emulated card's chip is this file. They exist only in the profile file,
never on the bus, and are the one exception to "nothing at rest in clear": like a plastic card,
the card itself holds them. Profile and state files are written 0600 in a 0700 folder
(``<state>/cards/``), as the parties' key stores are. The card's changing state (ATC, transit
balance, load sequence) is kept in a separate state file that the applet rewrites atomically,
so it persists across insertions.

Profiles are made by the provider adapters (``agents.providers``): a bank's
``adapter.issue_card(hsm, ...)`` and a transit operator's ``adapter.issue_transit_card(hsm, ...)``
derive the card's keys inside the provider's HSM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cardbus.cardprofile import CardProfile
from cardbus.errors import ConfigError
from cardbus.paths import private_dir, sub_dir


def _write_private(path: Path, text: str, *, durable: bool = True) -> None:
    """Atomically replace ``path`` (0600, in a 0700 folder); ``durable`` waits for the disk."""
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)


# -- files ------------------------------------------------------------------------------

def cards_dir() -> Path:
    return private_dir(sub_dir("cards"))


def save_profile(profile: CardProfile, home: Path | None = None) -> Path:
    path = (home or cards_dir()) / f"{profile.card_id}.json"
    _write_private(path, profile.model_dump_json(indent=2))
    return path


def load_profile(card_id: str, home: Path | None = None) -> CardProfile:
    path = (home or cards_dir()) / f"{card_id}.json"
    if not path.exists():
        raise ConfigError(f"no card {card_id!r} (issue one with `cardbus cards issue`)")
    return CardProfile.model_validate_json(path.read_text())


def list_profiles(home: Path | None = None) -> list[CardProfile]:
    d = home or cards_dir()
    return [CardProfile.model_validate_json(p.read_text()) for p in sorted(d.glob("*.json"))
            if not p.name.endswith(".state.json")]


class CardState:
    """A card's persisted counters (ATC, balance, load sequence) in ``<card>.state.json``."""

    def __init__(self, path: Path | None, **initial: int) -> None:
        self.path = path
        self.values: dict[str, int] = dict(initial)
        if path is not None and path.exists():
            self.values.update({k: int(v) for k, v in json.loads(path.read_text()).items()})

    @classmethod
    def for_profile(cls, profile: CardProfile, home: Path | None = None) -> CardState:
        path = (home or cards_dir()) / f"{profile.card_id}.state.json"
        return cls(path, atc=0, balance=profile.initial_balance, online_seq=0, blocked=0,
                   script_failures=0)

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def set(self, durable: bool = True, **values: int) -> None:
        """Update and persist (atomic replace) before the card answers.

        ``durable=False`` skips the fsync: the write survives the card process dying (the
        replace is atomic) but not the host losing power. For a counter whose loss fails
        closed (an ATC going back makes the issuer refuse the card's next cryptograms as
        replays) that is enough; money (a purse balance) stays durable."""
        self.values.update(values)
        if self.path is not None:
            _write_private(self.path, json.dumps(self.values), durable=durable)
