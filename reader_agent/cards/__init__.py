"""Virtual cards: transport-free applets (EMV payment, transit e-purse) and the vpcd transport."""

from __future__ import annotations

from pathlib import Path

from reader_agent.cards.applet import BaseApplet
from reader_agent.cards.emv_applet import EmvApplet
from reader_agent.cards.profile import CardProfile, CardState
from reader_agent.cards.transit_applet import TransitApplet


def applet_for(profile: CardProfile, home: Path | None = None,
               state: CardState | None = None) -> BaseApplet:
    """The applet a profile runs, with its persisted state."""
    state = state or CardState.for_profile(profile, home)
    if profile.kind == "transit":
        return TransitApplet(profile, state)
    return EmvApplet(profile, state)


__all__ = ["applet_for"]
