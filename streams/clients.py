"""Every Kafka client CardBus makes, in one place, each for a named party.

Producers are idempotent with ``acks=all`` (aiokafka's defaults are neither); consumers read
without auto commit and from the earliest offset unless told otherwise; admin clients are the
operator's. ``party`` names who the client acts for (``platform``, ``provider-<id>``,
``terminal``, ``auditor``, ``operator``): it is the client id prefix, and on a secured
bus the principal whose credentials the client presents (``connection``).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.security import client_security

PARTIES = ("platform", "terminal", "auditor", "operator")
"""The fixed parties (each with its principal and ACLs: ``streams.acls``); each provider is
``provider-<id>``."""


def connection(party: str, bootstrap: str) -> dict[str, Any]:
    """How ``party`` connects to the cluster at ``bootstrap``: SASL_SSL with its SCRAM
    credentials (from its vault) and the cluster's CA, or plaintext on an ``--insecure``
    cluster (``streams.security``)."""
    return client_security(party, bootstrap).aiokafka()


def faust_connection(party: str, bootstrap: str) -> dict[str, Any]:
    """The same as ``connection``, as Faust app settings (``broker_credentials``)."""
    return client_security(party, bootstrap).faust()


def producer(bootstrap: str, *, party: str, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent ``acks=all`` producer for ``party`` (``overrides`` win)."""
    settings: dict[str, Any] = {"acks": "all", "enable_idempotence": True,
                                "client_id": f"cardbus-{party}"}
    return AIOKafkaProducer(bootstrap_servers=bootstrap,
                            **{**settings, **connection(party, bootstrap), **overrides})


def consumer(bootstrap: str, *topics: str, party: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer for ``party``: no group and no commits unless ``overrides`` give a group,
    from the earliest offset."""
    settings: dict[str, Any] = {"group_id": None, "enable_auto_commit": False,
                                "auto_offset_reset": "earliest",
                                "client_id": f"cardbus-{party}"}
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                            **{**settings, **connection(party, bootstrap), **overrides})


def admin(bootstrap: str, *, party: str = "operator", **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, ACLs, cluster metadata), by default the operator's."""
    settings: dict[str, Any] = {"client_id": f"cardbus-{party}"}
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                               **{**settings, **connection(party, bootstrap), **overrides})
