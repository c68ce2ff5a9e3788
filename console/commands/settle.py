"""``cardbus settle --provider <id>``: close the provider's settlement batch now."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from streams import clients


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "settle",
        help="close a provider's settlement batch (cut-over) and show its totals",
        description=(
            "Send the provider's signed cut-over to every partition of its request topic; "
            "each partition closes its part of the batch in order with its payments and "
            "publishes a signed SettlementBatchClosed (each card's holds of the closed batch "
            "are cleared into its balance when the card is next used). Waits for the parts "
            "and prints the totals (the ledger movements they must match)."),
    )
    p.add_argument("--provider", required=True, help="provider id, e.g. bank-a")
    p.add_argument("--bootstrap", help="HOST:PORT (default $KAFKA_BOOTSTRAP_SERVERS or the "
                                       "running `cardbus broker`)")
    p.add_argument("--wait", type=float, default=20.0,
                   help="seconds to wait for the closed batch parts (0: do not wait)")
    p.set_defaults(func=_settle)


def _settle(args: argparse.Namespace) -> int:
    from agents.providers.base import adapter_for
    from streams.broker import resolve_bootstrap

    adapter_for(args.provider)  # a clear error for an unknown provider
    result = asyncio.run(settle(resolve_bootstrap(args.bootstrap), args.provider, args.wait))
    if result is None:
        print("cut-over sent; not waiting for the batch")
        return 0
    batch_id, parts, sums = result
    print(f"batch {batch_id}: {len(parts)} part(s) closed")
    if not sums:
        print("  no approved payments in this batch")
    for currency, t in sorted(sums.items()):
        print(f"  {currency}: approved {t['approved_count']} = {t['approved_amount']}, "
              f"reversed {t['reversed_count']} = {t['reversed_amount']}, "
              f"net {t['net_amount']} (minor units)")
    return 0


async def settle(bootstrap: str, provider_id: str, wait: float
                 ) -> tuple[str, list[object], dict[str, dict[str, int]]] | None:
    """Send the cut-over; with ``wait``, collect the batch parts and total them."""
    from aiokafka import TopicPartition

    from agents.providers.settle import batch_id_for, cutover_events, totals
    from cardbus.ceremony import provider_hsm
    from cardbus.errors import BrokerError
    from schemas.settlement import SettlementBatchClosed
    from streams import codec
    from streams.topics import SETTLEMENTS, provider_requests_spec

    spec = provider_requests_spec(provider_id)
    now = datetime.now(UTC)
    batch_id = batch_id_for(provider_id, now)
    events = cutover_events(provider_hsm(provider_id), batch_id, now, spec.partitions)
    consumer = clients.consumer(bootstrap, party="operator")
    producer = clients.producer(bootstrap, party=f"provider-{provider_id}")
    try:
        await producer.start()
        await consumer.start()
    except Exception as exc:  # noqa: BLE001 - any connection failure: one clear message
        await producer.stop()
        await consumer.stop()
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        tps = [TopicPartition(SETTLEMENTS.name, p) for p in range(SETTLEMENTS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        for partition, ev in events:
            await producer.send_and_wait(spec.name, codec.encode(ev, topic=spec.name),
                                         partition=partition)
        if wait <= 0:
            return None
        parts: list[SettlementBatchClosed] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msg in (m for ms in batch.values() for m in ms):
                closed = codec.decode_as(SETTLEMENTS.name, msg.value, SettlementBatchClosed)
                if closed.batch_id.startswith(batch_id):
                    parts.append(closed)
                    quiet_since = loop.time()
            if parts and loop.time() - quiet_since > 2.0:
                break  # partitions with nothing to settle publish no part
        return batch_id, list(parts), totals(parts)
    finally:
        await consumer.stop()
        await producer.stop()
