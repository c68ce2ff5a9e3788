"""How a terminal ends a payment: exactly one final outcome, and no bank keeps money for a
payment the terminal never heard back about.

``await_outcome`` waits for the platform's answer to a request; while none comes it resends the
same request (same event id, same bytes: the platform answers a resend with the stored answer,
or nothing more while the payment is in flight) with a growing pause, and at the terminal's
deadline it gives up: it publishes a ``PaymentCancelled`` (the platform then reverses whatever
the bank decided) and the payment's outcome at the terminal is "no answer".
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from cardbus.logs import get_logger
from schemas.base import Event
from schemas.payments import PaymentRequested

log = get_logger("reader_agent.outcome")

FIRST_RESEND_S = 2.0
MAX_PAUSE_S = 8.0


class Requester(Protocol):
    """What ``await_outcome`` needs of the bus (``TerminalSession`` satisfies it)."""

    async def request(self, req: PaymentRequested) -> asyncio.Future[Event]: ...

    async def cancel(self, req: PaymentRequested) -> None: ...


async def await_outcome(bus: Requester, req: PaymentRequested, fut: asyncio.Future[Event], *,
                        deadline: float, first_resend: float = FIRST_RESEND_S) -> Event | None:
    """The first answer about ``req`` within ``deadline`` seconds (resending meanwhile), else
    None after cancelling the payment."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    pause = first_resend
    resends = 0
    while (left := end - loop.time()) > 0:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), min(pause, left))
        except TimeoutError:
            if end - loop.time() <= 0:
                break
            resends += 1
            log.info("no answer yet: request resent", event_id=req.event_id, resends=resends)
            fut = await bus.request(req)
            pause = min(pause * 2, MAX_PAUSE_S)
    log.warning("no answer by the deadline: payment cancelled", event_id=req.event_id,
                resends=resends)
    await bus.cancel(req)
    return None
