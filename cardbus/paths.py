"""Where CardBus keeps its local state: ``$CARDBUS_HOME`` or ``<repo>/.cardbus``."""

from __future__ import annotations

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
