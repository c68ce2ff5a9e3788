"""Clock ticks: how time enters the platform's decisions without a wall clock inside them.

A platform worker sends a ``ClockTicked`` to each partition of the payment-request topic it
owns where a deadline is due, sealed with the platform's identity key: terminals write that
topic too, so an unsealed tick (or one far ahead of the broker's time of its record) is refused
(``agents.platform.decide.accept_tick``). The decision code sees the tick's ``occurred_at``
as "now" (to time out payments), and an audit replay sees the same ticks in the same order:
the same outcome.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from schemas.base import Event
from schemas.values import Count


class ClockTicked(Event):
    """The platform's clock, for one partition."""

    SEALED_BY: ClassVar[str] = "platform identity key"

    type: Literal["ClockTicked"] = "ClockTicked"
    schema_version: Literal[1] = 1

    partition: Count
