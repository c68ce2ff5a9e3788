"""The topic catalogue: every CardBus topic, its key, value schema, partitions and config.

Compacted topics hold current state (registrations, keys): the last event per key is what a
restarted consumer rebuilds from, so each carries the *whole* state for its key. Retained topics
hold the payment trail; audit needs at least 12 months, so retention defaults to 400 days and is
configurable (``CARDBUS_RETENTION_DAYS`` or ``TopicSettings(retention_days=...)``).

Per-provider request topics are ``cardbus.provider.<provider_id>.requests``: a new provider is a
new consumer of its own topic, and ACLs can give each provider exactly one topic to read.
Keys are chosen for ordering: everything about one card (``pan_token``) lands in one partition
of the provider topics, which replay detection (ATC) and balances need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import TypeAdapter

from cardbus.errors import ConfigError
from cardbus.settings import settings
from schemas.audit import AuditFindingReported
from schemas.base import Event
from schemas.cardmgmt import (
    CardCommandsIssued,
    CardManagementCompleted,
    CardManagementRequested,
    CardPolicyPublished,
    CardResponsesRelayed,
    PursePersonalisationPrepared,
    PursePersonalisationRequested,
)
from schemas.cards import CardTapped
from schemas.cardstatus import CardBlocked, CardUnblocked, IssuerScriptApplied, IssuerScriptReported
from schemas.clock import ClockTicked
from schemas.deadletters import EventDeadLettered
from schemas.keys import KeyRevoked
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import (
    AuthorizationDecided,
    AuthorizationRequested,
    PaymentCancelled,
    PaymentCompleted,
    PaymentRequested,
    ReversalCompleted,
    ReversalRequested,
)
from schemas.providers import ProviderAdmitted, ProviderKeysProvisioned, ProviderRegistered
from schemas.registry import type_name, union_adapter
from schemas.settlement import SettlementBatchClosed
from schemas.terminals import TerminalEnrolled, TerminalKeysIssued, TerminalStatusChanged
from schemas.transit import (
    TransitLoadAborted,
    TransitLoadApplied,
    TransitLoadAuthorized,
    TransitLoadConfirmed,
    TransitLoadRequested,
)

NAMESPACE = settings().namespace
"""The prefix of every topic name and Faust app id (``cardbus`` unless ``CARDBUS_NAMESPACE``
says otherwise: two CardBus systems, or two test runs, can share one cluster)."""

DAY_MS = 24 * 3600 * 1000

PAYMENT_PARTITIONS = settings().payment_partitions
"""Partitions of the payment-flow topics (taps, requests, results, provider requests, loads):
the unit of scale. 6 unless ``CARDBUS_PAYMENT_PARTITIONS`` says otherwise (benchmarks)."""
DEFAULT_RETENTION_DAYS = 400
MIN_AUDIT_RETENTION_DAYS = 366
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{0,31}$")
PROVIDER_REQUESTS_PREFIX = f"{NAMESPACE}.provider."
"""Every provider request topic starts with this (a prefixed ACL covers providers that join
later); no other topic does."""
_PROVIDER_TOPIC = re.compile(
    rf"^{re.escape(NAMESPACE)}\.provider\.([a-z0-9][a-z0-9\-]{{0,31}})\.requests$")

Cleanup = Literal["compact", "delete"]


@dataclass(frozen=True)
class TopicSettings:
    """Cluster-dependent settings: 1/1 on one local broker, 3/2 on a cluster."""

    replication_factor: int = 1
    min_insync_replicas: int = 1
    retention_days: int = DEFAULT_RETENTION_DAYS

    def __post_init__(self) -> None:
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ConfigError(
                "topics: need replication >= 1 and 1 <= min.insync.replicas <= replication")
        if self.retention_days < MIN_AUDIT_RETENTION_DAYS:
            raise ConfigError(
                f"topics: retention {self.retention_days} days is shorter than the audit minimum "
                f"({MIN_AUDIT_RETENTION_DAYS} days)"
            )

    @classmethod
    def from_env(cls, brokers: int = 1, overrides: Mapping[str, int | None] | None = None,
                 **override: int | None) -> TopicSettings:
        """Settings for a cluster of ``brokers`` brokers: ``CARDBUS_TOPIC_REPLICATION``,
        ``CARDBUS_TOPIC_MIN_ISR`` and ``CARDBUS_RETENTION_DAYS`` where set, else replication 3
        and ``min.insync.replicas`` 2 on three or more brokers (1 and 1 on fewer); keyword
        arguments that are not None win."""
        s = settings()
        replication = s.topic_replication or (3 if brokers >= 3 else 1)
        values: dict[str, int] = {
            "replication_factor": replication,
            "min_insync_replicas": s.topic_min_isr or (2 if replication >= 3 else 1),
            "retention_days": s.retention_days}
        given = {**(overrides or {}), **override}
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what it carries, how it is keyed, who writes and who reads it."""

    name: str
    key: str
    values: tuple[type[Event], ...]
    partitions: int
    cleanup: Cleanup
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str = ""
    extra_config: tuple[tuple[str, str], ...] = field(default=())

    @property
    def value_types(self) -> tuple[str, ...]:
        """The ``type`` tags this topic carries."""
        return tuple(type_name(m) for m in self.values)

    @property
    def adapter(self) -> TypeAdapter[Any]:
        """The TypeAdapter (discriminated union) that decodes this topic's values."""
        return union_adapter(self.values)

    def config(self, settings: TopicSettings | None = None) -> dict[str, str]:
        """The broker topic config this spec asks for. Every event topic stamps its records
        with the broker's clock (``LogAppendTime``): the time a consumer reads as "when it
        arrived" (deadlines, a tick's bound, a card's expiry) is never a producer's claim."""
        settings = settings or TopicSettings()
        conf = {
            "cleanup.policy": self.cleanup,
            "min.insync.replicas": str(settings.min_insync_replicas),
        }
        if self.values:  # event topics; a table's changelog keeps Faust's own timestamps
            conf["message.timestamp.type"] = "LogAppendTime"
        if self.cleanup == "delete":
            conf["retention.ms"] = str(settings.retention_days * DAY_MS)
        conf.update(dict(self.extra_config))
        return conf


PLATFORM, READER, AUDIT = "trusted-platform", "reader-agent", "audit-replay"
PROVIDERS = "provider adapters"
OPERATOR = "operator"
"""Who writes and reads each topic (``producers``/``consumers``): these roles are what
``streams.acls`` turns into each party's Kafka ACLs, so a role listed here is a permission."""

PROVIDER_REGISTRATIONS = TopicSpec(
    f"{NAMESPACE}.providers", "provider_id", (ProviderRegistered,), 3, "compact",
    (PROVIDERS,), (PLATFORM, AUDIT), "provider registrations: routing by BIN / transit AID")
PROVIDER_ADMISSIONS = TopicSpec(
    f"{NAMESPACE}.provider-admissions", "provider_id", (ProviderAdmitted,), 3, "compact",
    (OPERATOR,), (PLATFORM, AUDIT),
    "operator-signed admissions: the identity key and card ranges a provider may register")
PROVIDER_KEYS = TopicSpec(
    f"{NAMESPACE}.provider-keys", "provider_id", (ProviderKeysProvisioned,), 3, "compact",
    (PROVIDERS,), (PLATFORM, AUDIT), "TR-31 key blocks, the provider's whole current key set")
TERMINALS = TopicSpec(
    f"{NAMESPACE}.terminals", "terminal_id", (TerminalEnrolled,), 3, "compact",
    (READER,), (PLATFORM, AUDIT), "terminal enrollments (public keys)")
TERMINAL_STATUS = TopicSpec(
    f"{NAMESPACE}.terminal-status", "terminal_id", (TerminalStatusChanged,), 3, "compact",
    (OPERATOR,), (PLATFORM, AUDIT),
    "active/suspended; its own topic so compaction never drops an enrollment")
TERMINAL_KEYS = TopicSpec(
    f"{NAMESPACE}.terminal-keys", "terminal_id", (TerminalKeysIssued,), 3, "compact",
    (PLATFORM,), (READER, AUDIT), "terminal keys wrapped to each terminal, card-auth keys")
TAPS = TopicSpec(
    f"{NAMESPACE}.taps", "terminal_id", (CardTapped,), PAYMENT_PARTITIONS, "delete",
    (READER,), (AUDIT,), "card taps (masked/tokenized/encrypted card data)")
PAYMENT_REQUESTS = TopicSpec(
    f"{NAMESPACE}.payment-requests", "card.pan_token", (PaymentRequested, PaymentCancelled,
                                                        ClockTicked, IssuerScriptApplied),
    PAYMENT_PARTITIONS, "delete",
    (READER, PLATFORM), (PLATFORM, AUDIT),
    "payment requests and cancellations from terminals (terminal MAC), what cards answered to "
    "issuer scripts; the platform's clock ticks where a deadline is due")
PROVIDER_RESULTS = TopicSpec(
    f"{NAMESPACE}.provider-results", "pan_token or card_token",
    (AuthorizationDecided, ReversalCompleted, TransitLoadAuthorized, TransitLoadConfirmed,
     PursePersonalisationPrepared),
    PAYMENT_PARTITIONS, "delete", (PROVIDERS,), (PLATFORM, AUDIT),
    "signed provider answers (a purse for card management: keyed by its session id)")
TERMINAL_RESULTS = TopicSpec(
    f"{NAMESPACE}.terminal-results", "terminal_id",
    (PaymentCompleted, TransitLoadAuthorized, TransitLoadConfirmed), PAYMENT_PARTITIONS,
    "delete",
    (PLATFORM,), (READER, AUDIT), "results back to each terminal")
TRANSIT_LOADS = TopicSpec(
    f"{NAMESPACE}.transit-loads", "funding_pan_token",
    (TransitLoadRequested, TransitLoadApplied, TransitLoadAborted),
    PAYMENT_PARTITIONS, "delete", (READER,), (PLATFORM, AUDIT),
    "transit top-up requests and card proofs of load")
SETTLEMENTS = TopicSpec(
    f"{NAMESPACE}.settlements", "provider_id", (SettlementBatchClosed,), 3, "delete",
    (PROVIDERS,), (OPERATOR, AUDIT), "closed settlement batches")
CARD_POLICIES = TopicSpec(
    f"{NAMESPACE}.card-policies", "issuer_id", (CardPolicyPublished,), 3, "compact",
    (PROVIDERS,), (PLATFORM, AUDIT),
    "each issuer's card-management policy (what the platform may do to its cards)")
CARD_MANAGEMENT = TopicSpec(
    f"{NAMESPACE}.card-management", "session id", (CardManagementRequested,
                                                   CardResponsesRelayed),
    PAYMENT_PARTITIONS, "delete", (READER,), (PLATFORM, AUDIT),
    "card-management requests and the card's relayed answers (terminal MAC); co-partitioned "
    "with provider-results, so one platform worker holds a session")
CARD_COMMANDS = TopicSpec(
    f"{NAMESPACE}.card-commands", "terminal_id", (CardCommandsIssued, CardManagementCompleted),
    PAYMENT_PARTITIONS, "delete", (PLATFORM,), (READER, AUDIT),
    "the platform's secure-channel APDUs for a terminal to relay, and each session's outcome")
DEAD_LETTERS = TopicSpec(
    f"{NAMESPACE}.dead-letters", "original topic", (EventDeadLettered,), 3, "delete",
    (PLATFORM, PROVIDERS), (AUDIT, OPERATOR), "messages set aside, with reason")

KEY_HISTORY = TopicSpec(
    f"{NAMESPACE}.key-history", "key owner", (ProviderRegistered, TerminalEnrolled,
                                             TerminalKeysIssued, KeyRevoked), 3, "delete",
    (PROVIDERS, READER, PLATFORM, OPERATOR), (AUDIT,),
    "every key registration, issue and revocation, never compacted: the audit checks each "
    "seal against the key valid at its time (a party may only write its own keys: the audit "
    "checks each record's seal belongs to the key's owner, or to the platform)")
AUDIT_FINDINGS = TopicSpec(
    f"{NAMESPACE}.audit-findings", "audited topic/partition", (AuditFindingReported,), 3,
    "delete", (AUDIT,), (AUDIT, OPERATOR),
    "what `cardbus audit --follow` found, one event per finding: the auditor's only write "
    "(it writes nothing to the payment topics)")
STATIC_TOPICS: tuple[TopicSpec, ...] = (
    PROVIDER_REGISTRATIONS, PROVIDER_ADMISSIONS, PROVIDER_KEYS, TERMINALS, TERMINAL_STATUS,
    TERMINAL_KEYS, TAPS,
    PAYMENT_REQUESTS, PROVIDER_RESULTS, TERMINAL_RESULTS, TRANSIT_LOADS, SETTLEMENTS,
    CARD_POLICIES, CARD_MANAGEMENT, CARD_COMMANDS, DEAD_LETTERS, KEY_HISTORY, AUDIT_FINDINGS,
)
_BY_NAME = {spec.name: spec for spec in STATIC_TOPICS}

PROVIDER_REQUEST_VALUES: tuple[type[Event], ...] = (
    AuthorizationRequested, ReversalRequested, TransitLoadRequested, TransitLoadApplied,
    TransitLoadAborted, CardIssued, SettlementCutoverRequested, CardBlocked, CardUnblocked,
    IssuerScriptReported, PursePersonalisationRequested,
)


def provider_requests_topic(provider_id: str) -> str:
    """The request topic of one provider: ``cardbus.provider.<provider_id>.requests``."""
    if not _PROVIDER_ID.match(provider_id):
        raise ConfigError(f"not a provider id: {provider_id!r} (lower-case letters, digits, -)")
    return f"{NAMESPACE}.provider.{provider_id}.requests"


def provider_requests_spec(provider_id: str) -> TopicSpec:
    """The catalogue entry of one provider's request topic."""
    return TopicSpec(
        provider_requests_topic(provider_id), "pan_token or card_token", PROVIDER_REQUEST_VALUES,
        PAYMENT_PARTITIONS, "delete", (PLATFORM, f"provider:{provider_id}", OPERATOR),
        (f"provider:{provider_id}", AUDIT),
        f"requests for {provider_id}, signed by the platform (cut-overs, card issues and "
        f"blocks: the provider's own)",
    )


@lru_cache(maxsize=512)
def topic_spec(name: str) -> TopicSpec:
    """The spec of topic ``name`` (static, or a provider request topic)."""
    spec = _BY_NAME.get(name)
    if spec is not None:
        return spec
    match = _PROVIDER_TOPIC.match(name)
    if match:
        return provider_requests_spec(match.group(1))
    raise ConfigError(f"unknown topic {name!r}: not in the catalogue (streams/topics.py)")


# Faust tables (name -> partitions: a table's changelog must have its source topics' count)
PLATFORM_TABLES: dict[str, int] = {
    "routes": PROVIDER_REGISTRATIONS.partitions, "parked-keys": PROVIDER_KEYS.partitions,
    "admissions": PROVIDER_ADMISSIONS.partitions,
    "parked-registrations": PROVIDER_REGISTRATIONS.partitions,
    "terminals": TERMINALS.partitions, "platform-keys": TERMINALS.partitions,
    "pending": PAYMENT_REQUESTS.partitions, "card-policies": CARD_POLICIES.partitions,
}
PROVIDER_TABLES: dict[str, int] = dict.fromkeys(
    ("ledger", "partition", "purses"), PAYMENT_PARTITIONS)


def platform_app_id() -> str:
    """The trusted platform's Faust app id (and consumer group)."""
    return f"{NAMESPACE}-platform"


def provider_app_id(provider_id: str) -> str:
    """A provider's Faust app id (and consumer group)."""
    return f"{NAMESPACE}-provider-{provider_id}"


def changelog_specs(providers: Iterable[str] = ()) -> tuple[TopicSpec, ...]:
    """The Faust table changelog topics (compacted), made up front with the other topics so a
    worker never writes a table whose changelog the cluster has not announced yet."""
    out = [_changelog(platform_app_id(), t, n, PLATFORM,
                      AUDIT if t in AUDITED_TABLES else None)
           for t, n in PLATFORM_TABLES.items()]
    for pid in dict.fromkeys(providers):
        out += [_changelog(provider_app_id(pid), t, n, f"provider:{pid}")
                for t, n in PROVIDER_TABLES.items()]
    return tuple(out)


AUDITED_TABLES = ("platform-keys",)
"""Platform tables whose changelog the audit reads (the key records: terminal MAC keys)."""


def leader_topic(app_id: str) -> str:
    """The topic Faust's partition assignor makes for an app (``<app id>-__assignor-__leader``):
    the app's own, like its changelogs."""
    return f"{app_id}-__assignor-__leader"


def _changelog(app_id: str, table: str, partitions: int, owner: str,
               also_read_by: str | None = None) -> TopicSpec:
    readers = (owner, also_read_by) if also_read_by else (owner,)
    return TopicSpec(f"{app_id}-{table}-changelog", "table key", (), partitions, "compact",
                     (owner,), readers, f"changelog of the {table} table (state, not events)")


def catalogue(providers: Iterable[str] = (), *, with_changelogs: bool = False
              ) -> tuple[TopicSpec, ...]:
    """Every static topic plus the request topic of each provider in ``providers`` (and, with
    ``with_changelogs``, the workers' table changelogs)."""
    seen = dict.fromkeys(providers)
    specs = STATIC_TOPICS + tuple(provider_requests_spec(p) for p in seen)
    return specs + changelog_specs(seen) if with_changelogs else specs
