"""Blocking card work in a daemon thread, awaited for a bounded time.

A card that stops answering in the middle of an APDU holds pcscd's transmit (vpcd reads the
card's socket without a timeout), so the thread that sent it cannot be interrupted. The caller
stops waiting instead: ``in_card_thread`` gives up after ``timeout`` with a ``CardError``, and
when the abandoned work ends later (the card is removed, or answers at last) ``dispose`` gets its
result, so a late link is still closed. The thread is a daemon: a stuck card never keeps the
process from exiting (``asyncio.to_thread``'s pool threads are joined at exit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from cardbus.errors import CardError
from reader_agent.pcsc import DEFAULT_LIMITS, CardLimits

T = TypeVar("T")

MUTE_GRACE_S = 1.0
"""How much longer than a card step's deadline the caller waits for a card gone mute mid-APDU."""


def step_timeout(limits: CardLimits = DEFAULT_LIMITS, extra: float = 0.0) -> float:
    """How long to wait for one card step (plus ``extra``, e.g. waiting for the card to arrive)."""
    return limits.deadline_s + MUTE_GRACE_S + extra


def _later(dispose: Callable[[Any], None] | None) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:  # retrieved: nothing to close
            return
        if dispose is not None:
            threading.Thread(target=dispose, args=(fut.result(),), name="card-dispose",
                             daemon=True).start()
    return done


async def in_card_thread(fn: Callable[[], T], *, timeout: float,
                         dispose: Callable[[T], None] | None = None,
                         name: str = "card") -> T:
    """``fn()`` in a daemon thread; its result, or ``CardError`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        ok, value = True, cast(Any, None)
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task as it is
            ok, value = False, exc
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is closed: nobody waits for this any more
            if ok and dispose is not None:
                dispose(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    answered = False
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
        if not done:
            raise CardError(f"card did not answer within {timeout:g} s")
        answered = True
        return fut.result()
    finally:
        if not answered:  # timed out, or the caller was cancelled: close what comes later
            fut.add_done_callback(_later(dispose))
