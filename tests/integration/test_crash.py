"""kill -9 a bank worker in the middle of 500 payments and restart it: every request gets
exactly one final answer, nothing is debited twice, and each balance is the opening balance
minus what the terminal was told was approved."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from schemas.payments import AuthorizationDecided, PaymentCompleted, PaymentRequested
from streams.topics import (
    PROVIDER_RESULTS,
    TERMINAL_RESULTS,
    provider_app_id,
    provider_requests_topic,
)
from tests.integration.conftest import eventually
from tests.integration.system import System, Till, accounts, events_of, lag

pytestmark = [pytest.mark.broker, pytest.mark.slow]
PAYMENTS = 500
CARDS = 25
OPENING = 1_000_000


async def test_kill_9_provider_mid_stream(system: System, till: Till) -> None:
    rng = random.Random(7)
    cards = [await system.issue("bank-a", balance=OPENING) for _ in range(CARDS)]
    requests: list[tuple[PaymentRequested, str]] = []
    for i in range(PAYMENTS):
        card = cards[i % CARDS]
        req, _, _ = till.request(card, rng.randint(100, 5_000))
        requests.append((req, card.card.pan_token))
    futures = []
    for n, (req, _) in enumerate(requests):
        futures.append(await till.session.request(req))
        if n == PAYMENTS // 3:
            await asyncio.sleep(0.5)
            system.workers["bank-a"].kill()  # SIGKILL: no commit, no clean shutdown
            await asyncio.sleep(1.0)
            system.start_provider("bank-a")
    done = await asyncio.wait_for(asyncio.gather(*futures), timeout=240)
    answers = {d.correlation_id: d for d in done}
    assert len(answers) == PAYMENTS

    # every request: exactly one distinct final answer on the bus (copies must be identical)
    async def all_answers():  # type: ignore[no-untyped-def]
        evs = [e for e in await events_of(system.bootstrap, TERMINAL_RESULTS.name)
               if isinstance(e, PaymentCompleted)]
        by_payment: dict[str, set[str]] = defaultdict(set)
        for e in evs:
            by_payment[e.correlation_id].add(e.model_dump_json())
        return by_payment

    by_payment = await all_answers()
    for req, _ in requests:
        assert len(by_payment[req.correlation_id]) == 1, req.correlation_id

    # the bank decided each request at most once (re-sent copies are identical)
    decisions: dict[str, set[str]] = defaultdict(set)
    for e in await events_of(system.bootstrap, PROVIDER_RESULTS.name):
        if isinstance(e, AuthorizationDecided) and e.provider_id == "bank-a":
            decisions[e.request_event_id].add(e.model_dump_json())
    assert all(len(v) == 1 for v in decisions.values())

    # balances: opening minus what the terminal saw approved, once timeouts are reversed
    expected: dict[str, int] = defaultdict(int)
    for req, token in requests:
        if answers[req.correlation_id].approved:
            expected[token] += req.amount.amount

    async def settled():  # type: ignore[no-untyped-def]
        ledger = await accounts(system.bootstrap, "bank-a")
        got = {c.card.pan_token: OPENING - ledger[c.card.pan_token].available
               for c in cards if c.card.pan_token in ledger}
        return got if got == {c.card.pan_token: expected[c.card.pan_token] for c in cards} \
            else None

    # a bound, not a timing claim: after a SIGKILL the bank's partitions come back after its
    # session expires, a rebalance and table recovery, then the platform's timeouts are reversed
    # (minutes on a loaded machine); a payment lost stays unsettled however long we wait
    ok = await eventually(settled, timeout=180)

    async def drained():  # type: ignore[no-untyped-def]  # leave bank-a idle for later tests
        return await lag(system.bootstrap, provider_app_id("bank-a"),
                         provider_requests_topic("bank-a")) == 0

    await eventually(drained, timeout=180)
    if not ok:
        ledger = await accounts(system.bootstrap, "bank-a")
        diff = {c.card.pan_token[:12]: (OPENING - ledger[c.card.pan_token].available,
                                        expected[c.card.pan_token],
                                        len(ledger[c.card.pan_token].holds))
                for c in cards
                if OPENING - ledger[c.card.pan_token].available != expected[c.card.pan_token]}
        codes: dict[str, int] = defaultdict(int)
        for d in answers.values():
            codes[d.response_code] += 1
        from agents.platform.decide import derived_id
        lines = []
        for c in cards:
            tok = c.card.pan_token
            acct = ledger[tok]
            if OPENING - acct.available == expected[tok]:
                continue
            for req, t in requests:
                if t != tok:
                    continue
                aid = derived_id("auth", req.event_id)
                lines.append((tok[:10], aid[:8], req.amount.amount,
                              answers[req.correlation_id].response_code, aid in acct.holds))
        pytest.fail(f"ledger differs for {len(diff)} cards: {diff}; answers {dict(codes)}\n"
                    + "\n".join(map(str, lines)))
