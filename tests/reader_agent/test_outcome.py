"""A terminal ends each payment in exactly one outcome: resends while unanswered (same event
id), cancels at its deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from reader_agent.outcome import await_outcome
from schemas.base import Event


class Bus:
    """Answers the ``answer_on``-th request (1-based), or never."""

    def __init__(self, answer: Event | None, answer_on: int) -> None:
        self.answer, self.answer_on = answer, answer_on
        self.requests: list[Any] = []
        self.cancelled: list[Any] = []
        self.fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    async def request(self, req: Any) -> asyncio.Future[Event]:
        self.requests.append(req)
        if len(self.requests) == self.answer_on and self.answer is not None:
            self.fut.set_result(self.answer)
        return self.fut

    async def cancel(self, req: Any) -> None:
        self.cancelled.append(req)


class Req:
    event_id = "e" * 32


async def test_resends_the_same_request_until_answered() -> None:
    answer: Any = object()
    bus = Bus(answer, answer_on=3)
    req = Req()
    got = await await_outcome(bus, req, await bus.request(req),  # type: ignore[arg-type]
                              deadline=5, first_resend=0.01)
    assert got is answer
    assert len(bus.requests) == 3 and all(r is req for r in bus.requests)
    assert bus.cancelled == []


async def test_cancels_once_at_the_deadline_when_nothing_answers() -> None:
    bus = Bus(None, answer_on=0)
    req = Req()
    got = await await_outcome(bus, req, await bus.request(req),  # type: ignore[arg-type]
                              deadline=0.2, first_resend=0.01)
    assert got is None
    assert bus.cancelled == [req]
    assert len(bus.requests) >= 2  # it did resend before giving up
