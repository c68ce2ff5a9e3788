"""What the agents' handlers see of the bus, shared by the platform and the providers: a
consumed record, the send function, a table (Faust's in the app, a dict in unit tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Protocol

from schemas.base import Event

Table = MutableMapping[str, Any]
Send = Callable[[str, str | None, Event], Awaitable[None]]
"""``send(topic, key, event)``: publish one event (the app's ``Bus.send``)."""


class Record(Protocol):
    """What a handler reads of a consumed record (a Faust ``Message`` satisfies it)."""

    @property
    def value(self) -> Any: ...

    @property
    def partition(self) -> int: ...

    @property
    def timestamp(self) -> float: ...


def received_at(record: Record) -> datetime:
    """The broker timestamp of a record (LogAppendTime): when it reached the bus."""
    return datetime.fromtimestamp(record.timestamp, UTC)
