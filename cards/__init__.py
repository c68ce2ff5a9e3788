"""Virtual cards: transport-free applets (EMV payment, transit e-purse, and the multi-application
bank card with its GlobalPlatform card manager) and the vpcd transport."""

from __future__ import annotations

from pathlib import Path

from cardbus.cardprofile import CardProfile
from cards.applet import BaseApplet
from cards.emv_applet import EmvApplet
from cards.multiapp import MultiAppCard
from cards.profile import CardState
from cards.transit_applet import TransitApplet


def applet_for(profile: CardProfile, home: Path | None = None,
               state: CardState | None = None) -> BaseApplet:
    """The applet a profile runs, with its persisted state."""
    state = state or CardState.for_profile(profile, home)
    if profile.kind == "transit":
        return TransitApplet(profile, state)
    if profile.isd_enc:  # issued with a security domain: a multi-application card
        return MultiAppCard(profile, home, state)
    return EmvApplet(profile, state)


__all__ = ["applet_for"]
