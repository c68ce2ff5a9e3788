"""``cardbus bench reader`` runs end to end (cards in processes and in threads) and reports
each tap's dialogue split into the card's part and the events' part (numbers not judged)."""

from __future__ import annotations

import uuid

import pytest

from bench.reader import run_bench

pytestmark = [pytest.mark.pcsc, pytest.mark.broker]


@pytest.mark.parametrize("cards", ["process", "thread"])
async def test_reader_bench_taps_and_splits_the_dialogue(pcscd, kafka_bootstrap, cards) -> None:
    res = await run_bench(taps=4, readers=2, bootstrap=kafka_bootstrap, cards=cards,
                          topic_prefix=f"test.bench.{uuid.uuid4().hex[:8]}")
    assert res["errors"] == 0 and res["taps"] == 4 and res["cards"] == cards
    d, c, p = res["dialogue_ms"], res["card_ms"], res["publish_ms"]
    assert c["p50"] > 0 and p["p50"] > 0
    assert c["p50"] <= d["p99"] and p["p50"] <= d["p99"]  # parts of the whole
