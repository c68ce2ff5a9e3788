"""What TLS + SCRAM cost on the raw single hop: the same ``single_hop`` on a secured and on an
``--insecure`` cluster started side by side in one run, alternating, so the two see the same
machine load (a shared 2-core machine is noisy: compare the ratio, not the absolute rates).

The secured hop runs as the operator (a super user, so the ACL match is skipped: the cost
measured is the TLS record layer on every byte plus SCRAM once per connection; the authorizer's
per-request check for ordinary parties is not in it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.raw import single_hop
from streams import broker
from streams.topics import PAYMENT_PARTITIONS

Say = Callable[[str], None]


@contextlib.contextmanager
def _cluster_env(home: Path) -> Iterator[None]:
    old = os.environ.get("CARDBUS_KAFKA_CLUSTER")
    os.environ["CARDBUS_KAFKA_CLUSTER"] = str(home)  # the spawned hop processes inherit it
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CARDBUS_KAFKA_CLUSTER", None)
        else:
            os.environ["CARDBUS_KAFKA_CLUSTER"] = old


def _hop(mode: str, home: Path, bootstrap: str, messages: int, size: int) -> float:
    with _cluster_env(home):
        hop = single_hop(bootstrap, topic=f"bench-tls-{secrets.token_hex(3)}",
                         partitions=PAYMENT_PARTITIONS, size=size, count=messages,
                         party="operator")
    return float(hop["msgs_per_s"])


def compare(*, messages: int, size: int, rounds: int = 2, say: Say = print) -> dict[str, Any]:
    """Start a secured and an insecure one-node cluster, warm each up with one hop not
    counted (the brokers' JIT), run the hop ``rounds`` times on each (alternating), stop both;
    rates and the secured/insecure ratio of the medians."""
    root = Path(tempfile.mkdtemp(prefix="cardbus-bench-tls-"))
    homes = {"secured": root / "secured", "insecure": root / "insecure"}
    clusters: dict[str, broker.Cluster] = {}
    try:
        for mode, home in homes.items():
            with _cluster_env(home):
                clusters[mode] = broker.start_on_free_ports(
                    home, start_port=35092, insecure=mode == "insecure")
            say(f"{mode}: {clusters[mode].bootstrap}")
        for mode, home in homes.items():
            warm = _hop(mode, home, clusters[mode].bootstrap, messages, size)
            say(f"warm-up {mode}: {warm:.0f} msg/s (not counted)")
        rates: dict[str, list[float]] = {m: [] for m in homes}
        for i in range(rounds):
            for mode in (("secured", "insecure") if i % 2 == 0 else ("insecure", "secured")):
                rate = _hop(mode, homes[mode], clusters[mode].bootstrap, messages, size)
                rates[mode].append(rate)
                say(f"round {i + 1} {mode}: {rate:.0f} msg/s")
    finally:
        for home in homes.values():
            broker.stop(home)
    med = {m: statistics.median(v) for m, v in rates.items()}
    return {"messages": messages, "message_bytes": size, "rounds": rounds, "rates": rates,
            "median_msgs_per_s": med, "secured_over_insecure": round(
                med["secured"] / med["insecure"], 3)}
