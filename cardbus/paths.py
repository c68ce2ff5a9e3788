"""Where CardBus keeps its local state: ``$CARDBUS_HOME`` or ``<repo>/.cardbus``."""

from __future__ import annotations

import stat
from pathlib import Path

from cardbus.settings import settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """The project-local state folder (created on demand)."""
    path = settings().home or REPO_ROOT / ".cardbus"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sub_dir(*parts: str) -> Path:
    """A folder under the state folder (created on demand)."""
    path = state_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (0700), created on demand: where secrets
    at rest live (a party's key store, the virtual cards' profiles)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path
