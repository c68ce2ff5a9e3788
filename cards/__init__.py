"""Virtual cards: transport-free applets (EMV payment, transit e-purse) and the vpcd transport."""

from __future__ import annotations

from pathlib import Path

from cardbus.cardprofile import CardProfile
from cards.applet import BaseApplet
from cards.emv_applet import EmvApplet
from cards.profile import CardState
from cards.transit_applet import TransitApplet


def applet_for(profile: CardProfile, home: Path | None = None,
               state: CardState | None = None) -> BaseApplet:
    """The applet a profile runs, with its persisted state."""
    state = state or CardState.for_profile(profile, home)
    if profile.kind == "transit":
        return TransitApplet(profile, state)
    return EmvApplet(profile, state)


__all__ = ["applet_for"]
