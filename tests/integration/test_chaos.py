"""Faults under load (``cardbus bench chaos`` scenarios 1, 3 and 4, small): a second platform
worker joins and leaves, the only platform worker is killed and restarted, a bank's worker is
stopped for 5 s. Payments go out at a steady rate from a terminal that resends and cancels as
real ones do; every payment must end in exactly one outcome, answered by the platform (none
cancelled at the deadline), and each bank's balances must match what the terminal was told."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from agents.providers.base import IssuedCard
from schemas.payments import PaymentCompleted, PaymentRequested
from streams.topics import TERMINAL_RESULTS, provider_app_id, provider_requests_topic
from tests.integration.conftest import eventually
from tests.integration.system import System, Till, accounts, events_of, lag

pytestmark = [pytest.mark.broker, pytest.mark.slow]
RATE = 15  # payments a second
SECONDS = 16
FAULT_AT = 3.0
OPENING = 10_000_000
DEADLINE = 90.0  # the terminal's: long, so a slow CI machine answers rather than cancels

Fault = Callable[[System], Awaitable[None]]


async def _under_load(system: System, till: Till, fault: Fault) -> None:
    rng = random.Random(15)
    cards = ([await system.issue("bank-a", balance=OPENING) for _ in range(8)]
             + [await system.issue("bank-b", balance=OPENING) for _ in range(8)])
    reqs: list[tuple[PaymentRequested, IssuedCard]] = []
    for i in range(RATE * SECONDS):
        card = cards[i % len(cards)]
        req, _, _ = till.request(card, rng.randint(100, 5_000))
        reqs.append((req, card))
    loop = asyncio.get_running_loop()
    start = loop.time()
    faulting = asyncio.create_task(_after(FAULT_AT, fault, system))
    paying = []
    for n, (req, _) in enumerate(reqs):
        await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))
        paying.append(asyncio.create_task(till.session.pay(req, timeout=DEADLINE)))
    outcomes = await asyncio.gather(*paying)
    await faulting
    answered = {r.correlation_id: o for (r, _), o in zip(reqs, outcomes, strict=True)
                if isinstance(o, PaymentCompleted)}
    cancelled = [r.correlation_id for (r, _), o in zip(reqs, outcomes, strict=True) if o is None]
    assert not cancelled, (f"{len(cancelled)} of {len(reqs)} payments had no answer by the "
                           f"terminal's deadline\n{system.logs()}")

    # one outcome per payment on the bus: copies (a resend answered again) are identical
    told: dict[str, set[tuple[str, bool, str | None]]] = defaultdict(set)
    for ev in await events_of(system.bootstrap, TERMINAL_RESULTS.name):
        if isinstance(ev, PaymentCompleted) and ev.correlation_id in answered:
            told[ev.correlation_id].add((ev.response_code, ev.approved, ev.auth_code))
    duplicated = {pid: codes for pid, codes in told.items() if len(codes) > 1}
    assert not duplicated, duplicated
    assert set(told) == set(answered)

    # each balance: the opening balance less what the terminal was told was approved
    expected: dict[str, int] = defaultdict(int)
    for req, card in reqs:
        if answered[req.correlation_id].approved:
            expected[card.card.pan_token] += req.amount.amount
    await _balances_match(system, cards, expected)


async def _after(delay: float, fault: Fault, system: System) -> None:
    await asyncio.sleep(delay)
    await fault(system)


async def _balances_match(system: System, cards: list[IssuedCard],
                          expected: dict[str, int]) -> None:
    async def debited() -> dict[str, int]:
        got: dict[str, int] = {}
        for provider in ("bank-a", "bank-b"):
            ledger = await accounts(system.bootstrap, provider)
            got.update({c.card.pan_token: OPENING - ledger[c.card.pan_token].available
                        for c in cards if c.card.pan_token in ledger})
        return got

    want = {c.card.pan_token: expected[c.card.pan_token] for c in cards}

    async def settled() -> bool:
        return await debited() == want

    ok = await eventually(settled, timeout=120)
    for provider in ("bank-a", "bank-b"):  # leave the banks idle for the tests after this one
        async def drained(p: str = provider) -> bool:
            return await lag(system.bootstrap, provider_app_id(p),
                             provider_requests_topic(p)) == 0
        await eventually(drained, timeout=90)
    if not ok:
        got = await debited()
        diff = {t[:12]: (got.get(t), want[t]) for t in want if got.get(t) != want[t]}
        pytest.fail(f"balances differ from the outcomes for {len(diff)} cards: {diff}")


async def test_a_second_platform_worker_joins_and_leaves_under_load(system: System,
                                                                    till: Till) -> None:
    async def join_then_leave(s: System) -> None:
        s.worker("platform-2", "platform", "--instance", "2", "--timeout", "10")
        await s.ready("platform-2")
        await asyncio.sleep(3.0)
        await asyncio.to_thread(s.workers["platform-2"].stop)  # SIGTERM: it leaves the group

    await _under_load(system, till, join_then_leave)


async def test_the_only_platform_worker_killed_and_restarted_under_load(system: System,
                                                                        till: Till) -> None:
    async def kill_and_restart(s: System) -> None:
        await asyncio.to_thread(s.workers["platform"].kill)  # SIGKILL: no commit, no flush
        await asyncio.sleep(2.0)
        s.worker("platform", "platform", "--timeout", "10")

    await _under_load(system, till, kill_and_restart)
    await system.ready("platform")


async def test_a_bank_worker_stopped_for_5_s_under_load(system: System, till: Till) -> None:
    async def pause(s: System) -> None:
        proc = s.workers["bank-a"].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(5.0)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)

    await _under_load(system, till, pause)
