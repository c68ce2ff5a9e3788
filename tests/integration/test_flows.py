"""Issue-6 flows on real workers: duplicates, settlement against the ledger, a provider joining
while the platform runs, timeouts and late approvals, exactly-once mode, bad input."""

from __future__ import annotations

import asyncio
import base64

import pytest

from agents.providers.base import adapter_for
from cardbus.ceremony import provider_hsm
from cardbus.response_codes import APPROVED, ISSUER_UNAVAILABLE
from console.commands.settle import settle
from schemas.deadletters import EventDeadLettered
from schemas.payments import ReversalCompleted
from streams import codec
from streams.topics import (
    DEAD_LETTERS,
    PAYMENT_REQUESTS,
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_RESULTS,
    TERMINALS,
    TRANSIT_LOADS,
    provider_requests_topic,
)
from tests.integration.conftest import eventually
from tests.integration.system import (
    System,
    Till,
    accounts,
    events_of,
    publish,
    publish_raw,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_duplicate_request_debits_once_and_gets_the_same_answer(
        system: System, till: Till) -> None:
    card = await system.issue("bank-b", balance=10_000)
    req, _, _ = till.request(card, 2_500)
    first = await till.session.pay(req)
    # the terminal's outbox re-sends the very same request (a lost ack, a restart)
    await till.session.publisher.send(PAYMENT_REQUESTS.name, req.card.pan_token.encode(), req)

    async def resent():  # type: ignore[no-untyped-def]
        return [e for e in till.session.unmatched if e.correlation_id == req.correlation_id]

    again = await eventually(resent, timeout=20)
    assert first.response_code == APPROVED
    assert again and again[0].model_dump_json() == first.model_dump_json()

    async def ledger():  # type: ignore[no-untyped-def]
        acct = (await accounts(system.bootstrap, "bank-b")).get(card.card.pan_token)
        return acct if acct is not None and acct.holds else None

    acct = await eventually(ledger)
    assert acct is not None and acct.available == 10_000 - 2_500


async def test_settlement_batch_matches_the_ledger(system: System, till: Till) -> None:
    await settle(system.bootstrap, "bank-b", wait=15)  # close what earlier tests left open
    cards = [await system.issue("bank-b", balance=20_000) for _ in range(3)]
    amounts = [1_100, 2_200, 3_300]
    for card, amount in zip(cards, amounts, strict=True):
        done, _, _ = await till.pay(card, amount)
        assert done.response_code == APPROVED
    declined, _, _ = await till.pay(cards[0], 19_000)  # over the available balance
    assert not declined.approved
    result = await settle(system.bootstrap, "bank-b", wait=20)
    assert result is not None
    _batch, parts, sums = result
    assert sums["CNY"]["approved_count"] == 3
    assert sums["CNY"]["approved_amount"] == sum(amounts) == sums["CNY"]["net_amount"]
    assert sum(p.declined_count for p in parts) == 1  # type: ignore[attr-defined]

    # the closed batch's holds are cleared into the balance when each card is next used
    for card in cards:
        again, _, _ = await till.pay(card, 100)
        assert again.response_code == APPROVED

    async def cleared():  # type: ignore[no-untyped-def]
        ledger = await accounts(system.bootstrap, "bank-b")
        accts = [ledger.get(c.card.pan_token) for c in cards]
        return accts if all(a is not None and len(a.holds) == 1 for a in accts) else None

    accts = await eventually(cleared)
    assert accts, "holds of the closed batch were not cleared into the ledger"
    for acct, amount in zip(accts, amounts, strict=True):
        assert acct.balance == 20_000 - amount  # the movements the batch totals
        assert acct.available == 20_000 - amount - 100  # and the new hold


async def test_third_provider_joins_without_restart(system: System, till: Till) -> None:
    """A new bank joins a running system; a running terminal with no code of that bank (the
    terminal imports nothing of the providers: the layer contracts) learns its cards' AID from
    the platform's key set and pays with one."""
    bank_c_aid = adapter_for("bank-c").aid
    assert bank_c_aid not in till.terminal.payment_aids()
    system.start_provider("bank-c")
    await till.learn("bank-c")  # the platform re-issued the key set
    assert till.terminal.payment_aids()[bank_c_aid] == "bank-c"
    assert till.terminal.directory["bank-c"].kind == "bank"
    await system.ready("bank-c")
    card = await system.issue("bank-c", balance=5_000)
    done, tap, link = await till.pay(card, 1_000, timeout=60)
    assert done.response_code == APPROVED and done.provider_id == "bank-c"
    assert Till.card_accepts(done, tap, link)


async def test_timeout_declines_91_then_late_approval_is_reversed(system: System,
                                                                   till: Till) -> None:
    if "bank-c" not in system.workers:
        system.start_provider("bank-c")
    await till.learn("bank-c")
    await system.ready("bank-c")
    card = await system.issue("bank-c", balance=9_000)
    warm, _, _ = await till.pay(card, 100, timeout=60)  # bank-c is up and answering
    assert warm.approved
    system.workers["bank-c"].stop()
    done, _, _ = await till.pay(card, 4_000, timeout=30)
    assert done.response_code == ISSUER_UNAVAILABLE
    system.start_provider("bank-c")  # comes back, approves late, then applies the reversals

    async def reversals():  # type: ignore[no-untyped-def]
        evs = await events_of(system.bootstrap, PROVIDER_RESULTS.name)
        mine = [e for e in evs if isinstance(e, ReversalCompleted)
                and e.correlation_id == done.correlation_id]
        return mine if len({e.event_id for e in mine}) >= 2 else None

    mine = await eventually(reversals, timeout=90)
    assert mine, system.logs()
    assert any(e.reversed for e in mine)

    async def released():  # type: ignore[no-untyped-def]
        acct = (await accounts(system.bootstrap, "bank-c")).get(card.card.pan_token)
        return acct if acct is not None and acct.available == 9_000 - 100 else None

    assert await eventually(released, timeout=30), "the late approval's hold was not released"


async def test_exactly_once_mode_is_a_setting(system: System, till: Till) -> None:
    """bank-c restarted with Faust exactly_once: it still decides, idempotently."""
    if "bank-c" in system.workers:
        system.workers["bank-c"].stop()
    system.worker("bank-c", "provider", "bank-c", "--exactly-once")
    await till.learn("bank-c")
    await system.ready("bank-c")
    card = await system.issue("bank-c", balance=3_000)
    done, _, _ = await till.pay(card, 1_500, timeout=90)
    assert done.response_code == APPROVED, system.logs()


async def test_bad_input_goes_to_dead_letters_and_traffic_continues(system: System,
                                                                     till: Till) -> None:
    garbage = [b"\xff\xfe not json", b'{"type": "Nope", "schema_version": 1}',
               codec.encode(_sample("TerminalStatusChanged"))]
    targets = [PAYMENT_REQUESTS.name, PROVIDER_RESULTS.name, PROVIDER_REGISTRATIONS.name,
               PROVIDER_KEYS.name, TERMINALS.name, TRANSIT_LOADS.name,
               provider_requests_topic("bank-a")]
    for topic in targets:
        await publish_raw(system.bootstrap, topic, garbage)
    # a forged decision (bank-a's identity, wrong key) and a registration for nobody's key
    forged = _sample("AuthorizationDecided")
    await publish(system.bootstrap, PROVIDER_RESULTS.name, "tok_forged", forged)
    hsm = provider_hsm("bank-a", system.home)
    card = await system.issue("bank-a", balance=5_000)
    done, _, _ = await till.pay(card, 500)  # good traffic behind the bad
    assert done.response_code == APPROVED

    async def letters():  # type: ignore[no-untyped-def]
        evs = [e for e in await events_of(system.bootstrap, DEAD_LETTERS.name)
               if isinstance(e, EventDeadLettered)]
        seen = {e.original_topic for e in evs}
        return evs if set(targets) <= seen else None

    evs = await eventually(letters, timeout=30)
    assert evs, "not every consumed topic dead-lettered its garbage"
    originals = {base64.urlsafe_b64decode(e.original_b64) for e in evs}
    assert b"\xff\xfe not json" in originals
    forged_letters = [e for e in evs if e.original_topic == PROVIDER_RESULTS.name
                      and e.error_code == "rejected"]
    assert forged_letters, [(e.original_topic, e.error_code, e.reason) for e in evs]
    del hsm


def _sample(name: str):  # type: ignore[no-untyped-def]
    from schemas.samples import sample_event

    return sample_event(name)


async def _idle() -> None:
    await asyncio.sleep(0)


async def test_suspended_terminal_is_declined_until_activated(system: System,
                                                               till: Till) -> None:
    import subprocess
    import sys

    from cardbus.response_codes import SUSPENDED_TERMINAL

    def operator(action: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "console.cli", "terminal", action, "--terminal-id",
             till.terminal.terminal_id, "--bootstrap", system.bootstrap],
            env=system.env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    card = await system.issue("bank-a", balance=5_000)
    operator("suspend")

    async def declined():  # type: ignore[no-untyped-def]
        answer, _, _ = await till.pay(card, 100)
        return answer if answer.response_code == SUSPENDED_TERMINAL else None

    assert await eventually(declined, timeout=30), "the suspension never took effect"
    operator("activate")

    async def approved():  # type: ignore[no-untyped-def]
        answer, _, _ = await till.pay(card, 100)
        return answer if answer.approved else None

    assert await eventually(approved, timeout=30), "the activation never took effect"


async def test_two_platform_workers_share_the_payments(system: System, till: Till) -> None:
    """A second platform worker joins the group: payments on every partition still find their
    route, terminal and keys (each worker keeps routes, terminals and keys in full)."""
    second = system.worker("platform-2", "platform", "--instance", "2", "--timeout", "10")
    try:
        await system.ready("platform-2")
        cards = [await system.issue("bank-a", balance=50_000) for _ in range(12)]
        codes = []
        for card in cards:  # twelve cards: their PAN tokens spread over the six partitions
            done, _, _ = await till.pay(card, 700, timeout=60)
            codes.append(done.response_code)
        assert codes == ["00"] * len(cards), (codes, system.logs())
    finally:
        second.stop()
    # the first worker takes every partition back (the group rebalances once more); the
    # tests after this one rely on it answering on all six partitions again
    cards = [await system.issue("bank-a", balance=50_000) for _ in range(12)]
    codes = []
    for card in cards:
        done, _, _ = await till.pay(card, 700, timeout=90)
        codes.append(done.response_code)
    assert codes == ["00"] * len(cards), (codes, system.logs())
