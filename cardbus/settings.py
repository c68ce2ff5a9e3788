"""Every environment variable CardBus reads, in one typed object.

``settings()`` reads the environment afresh (a test may set a variable first); a bad value is a
``ConfigError`` naming the variable. The README's settings table is this class, variable by
variable. Per-party secrets are not settings: a party's storage key comes from
``CARDBUS_STORAGE_KEY_<PARTY>`` or its 0600 key file (``cardbus.vault``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cardbus.errors import ConfigError

DEFAULT_KAFKA_PORT = 9092
DEFAULT_ISO_PORT = 8583


class Settings(BaseSettings):
    """CardBus's configuration from the environment (``CARDBUS_*``, ``KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="CARDBUS_", frozen=True, extra="ignore")

    home: Path | None = Field(
        default=None, description="state folder: keys, broker data, worker tables, virtual "
                                  "cards, logs (default: .cardbus in the checkout)")
    namespace: str = Field(
        default="cardbus", pattern=r"^[a-z][a-z0-9\-]{0,30}$",
        description="prefix of every topic name, consumer group and Faust app id (two CardBus "
                    "systems, or test runs, can share one cluster)")
    payment_partitions: int = Field(
        default=6, ge=1, le=256,
        description="partitions of the payment-flow topics: the unit of scale")
    topic_replication: int | None = Field(
        default=None, ge=1, le=16,
        description="replication factor of new topics (default: 3 on a cluster of three or "
                    "more brokers, else 1)")
    topic_min_isr: int | None = Field(
        default=None, ge=1, le=16,
        description="min.insync.replicas of new topics (default: 2 with replication 3, else 1)")
    retention_days: int = Field(
        default=400, ge=366,
        description="retention of the payment trail (the audit needs at least 366 days)")
    audit_grace_s: float = Field(
        default=10.0, gt=0, le=86_400,
        description="`cardbus audit --follow`: seconds after a payment's last event before a "
                    "missing answer (outcome, reversal, decision) is a finding")
    audit_follow_window: int = Field(
        default=200_000, ge=1_000, le=100_000_000,
        description="`cardbus audit --follow`: event ids (and card cryptograms) it remembers "
                    "for the duplicate and replay checks, the newest (about 0.5 KB each, in "
                    "memory and in its checkpoint); older re-uses are the batch audit's")
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port] of the Kafka cluster (default: the running "
                    "`cardbus broker`)")
    kafka_port: int = Field(
        default=DEFAULT_KAFKA_PORT, ge=1, le=65535,
        description="client port of the local broker `cardbus broker start` runs")
    kafka_security: Literal["sasl_ssl", "plaintext"] | None = Field(
        default=None, description="how clients reach the cluster (default: what the local "
                                  "cluster's record says, else sasl_ssl)")
    kafka_ca: Path | None = Field(
        default=None, description="the CA file clients trust (default: the local cluster's "
                                  "own CA)")
    kafka_cluster: Path | None = Field(
        default=None, description="folder of the local cluster `cardbus broker` runs: its "
                                  "mode, CA and the operator's vault (default: "
                                  "<home>/kafka/cluster)")
    kafka_libs: Path | None = Field(
        default=None, description="folder of the Apache Kafka jars (default: "
                                  "<home>/kafka-libs, fetched from Maven Central)")
    faust_patches: str = Field(
        default="all", pattern=r"^[a-z_,]*$",
        description="which of the Faust patches (streams/faust_patches.py) workers apply: "
                    "all, none, or a comma-separated list of names (for measurements)")
    faust_trace: bool = Field(
        default=False,
        description="workers log Faust's offset bookkeeping (queue clears, gaps, commits, "
                    "seeks, recovery end offsets): for diagnosis")
    batch_max: int = Field(
        default=200, ge=0, le=10_000,
        description="records a hot agent takes at most in one batch (streams/batching.py); "
                    "0: record by record (for measurements)")
    batch_within_ms: float = Field(
        default=5.0, ge=0.0, le=1000.0,
        description="how long a batch waits to fill before it is decided with what it has")
    producer_linger_ms: float = Field(
        default=2.0, ge=0.0, le=1000.0,
        description="how long a worker's producer waits to fill a batch before sending it")
    fetch_min_bytes: int = Field(
        default=1, ge=1, le=1 << 20,
        description="bytes the broker gathers for a worker's fetch before answering (it "
                    "answers at CARDBUS_FETCH_MAX_WAIT_MS anyway)")
    fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=1500,
        description="how long the broker holds a worker's fetch that has fewer than "
                    "CARDBUS_FETCH_MIN_BYTES")
    commit_interval_ms: int = Field(
        default=500, ge=10, le=60_000,
        description="how often a worker commits its consumed offsets")
    event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description="the workers' event loop: asyncio, or uvloop (pip install "
                    "'cardbus[fast]')")
    iso_host: str | None = Field(
        default=None, pattern=r"^[^:\s]*:\d{1,5}$",
        description="HOST:PORT of the ISO 8583 bank host the bank-iso bridge talks to "
                    "(default: the running `cardbus iso-host`)")
    iso_port: int = Field(
        default=DEFAULT_ISO_PORT, ge=1, le=65535,
        description="port `cardbus iso-host start` listens on (127.0.0.1)")
    iso_host_libs: Path | None = Field(
        default=None, description="folder of the jPOS jars (default: <home>/iso-host/libs)")
    iso_host_classes: Path | None = Field(
        default=None, description="folder of the compiled host (default: "
                                  "<home>/iso-host/classes)")


def settings() -> Settings:
    """The settings from the environment as it is now."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        var = name if name.isupper() else f"CARDBUS_{name.upper()}"
        raise ConfigError(f"{var}={err.get('input')!r}: {err['msg']}") from None


def table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the README's table."""
    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        var = (alias.choices[0] if isinstance(alias, AliasChoices) else f"CARDBUS_{name.upper()}")
        default = "" if field.default is None else str(field.default)
        rows.append((str(var), default, field.description or ""))
    return rows
