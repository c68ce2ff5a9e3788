"""Who may do what on the bus: one Kafka principal per party, its ACLs built from the catalogue.

Each topic's ``producers`` and ``consumers`` in ``streams.topics`` are the permissions: a
producer role gets ``WRITE`` on the topic, a consumer role ``READ`` (both imply ``DESCRIBE``),
nothing else is granted, and the broker runs with ``allow.everyone.if.no.acl.found=false``. So
the catalogue and the ACLs cannot drift: changing who reads a topic is changing its spec.

Parties and their principals (``User:<namespace>-<party>``, so two CardBus systems or two test
runs on one cluster never share an identity):

- ``platform``: its topics per the catalogue, WRITE on every provider's request topic (prefixed
  ``<ns>.provider.``: a bank that joins later is covered), its own Faust topics (table
  changelogs, the assignor's leader topic: READ, WRITE, CREATE), its consumer group, and its
  transactional ids (prefixed ``<ns>-platform-``, for ``--exactly-once``);
- ``provider-<id>``: READ (and WRITE: its daily cut-over) on its own request topic only, its
  outputs per the catalogue, its own Faust topics, group and transactional ids;
- ``terminal`` (the terminal fleet): its topics per the catalogue; no group (it reads without
  one and commits nothing);
- ``auditor``: READ on every catalogue topic (prefixed for provider request topics) and the
  platform's key-records changelog; WRITE on one topic only, ``<ns>.audit-findings`` (what
  ``cardbus audit --follow`` finds; its checkpoint is a local file, not a topic); DESCRIBE on
  groups ``<ns>-audit-*`` (the audit reader's coordinator look-up) and never READ on a group,
  so it cannot commit an offset;
- ``operator``: a super user (``super.users``): creates topics, ACLs and credentials, changes
  terminal status, sends cut-overs. Its catalogue roles are listed for the reader's sake.

The brokers themselves are ``User:broker`` (mutual TLS between nodes), also a super user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cardbus.errors import ConfigError
from streams.topics import (
    AUDIT,
    NAMESPACE,
    OPERATOR,
    PLATFORM,
    PROVIDER_REQUESTS_PREFIX,
    PROVIDERS,
    READER,
    TopicSpec,
    catalogue,
    changelog_specs,
    leader_topic,
    platform_app_id,
    provider_app_id,
    provider_requests_spec,
)

ResourceType = Literal["topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]

PLATFORM_PARTY, TERMINAL_PARTY, AUDITOR_PARTY, OPERATOR_PARTY = (
    "platform", "terminal", "auditor", "operator")
BROKER_PRINCIPAL = "User:broker"
OPERATOR_PRINCIPAL = "User:operator"
"""The cluster's administrator: one per cluster (not per namespace), a super user."""


def provider_party(provider_id: str) -> str:
    """The party (and vault) name of a provider: ``provider-<id>``."""
    return f"provider-{provider_id}"


def user_name(party: str) -> str:
    """The SCRAM user name of ``party``: ``<namespace>-<party>`` (``operator`` for the
    cluster's operator)."""
    return "operator" if party == OPERATOR_PARTY else f"{NAMESPACE}-{party}"


def principal(party: str) -> str:
    """``party``'s Kafka principal (``User:<user name>``)."""
    return f"User:{user_name(party)}"


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` on a resource (any host)."""

    principal: str
    resource_type: ResourceType
    pattern: Pattern
    name: str
    operation: Operation

    def __str__(self) -> str:
        return (f"{self.principal} {self.operation} {self.resource_type} "
                f"{self.name}{'*' if self.pattern == 'prefixed' else ''}")


def parties(providers: Iterable[str]) -> tuple[str, ...]:
    """Every party of a system with ``providers`` (operator last)."""
    ids = dict.fromkeys(providers)
    return (PLATFORM_PARTY, *(provider_party(p) for p in ids), TERMINAL_PARTY, AUDITOR_PARTY,
            OPERATOR_PARTY)


def _role_parties(role: str, providers: tuple[str, ...]) -> tuple[str, ...]:
    if role == PLATFORM:
        return (PLATFORM_PARTY,)
    if role == READER:
        return (TERMINAL_PARTY,)
    if role == AUDIT:
        return (AUDITOR_PARTY,)
    if role == OPERATOR:
        return (OPERATOR_PARTY,)
    if role == PROVIDERS:
        return tuple(provider_party(p) for p in providers)
    if role.startswith("provider:"):
        return (provider_party(role.split(":", 1)[1]),)
    raise ConfigError(f"topic role {role!r} names no party (streams/acls.py)")


def _topic_grants(spec: TopicSpec, providers: tuple[str, ...], *, pattern: Pattern = "literal",
                  name: str | None = None, only: str | None = None) -> set[Grant]:
    out: set[Grant] = set()
    for roles, operation in ((spec.producers, "WRITE"), (spec.consumers, "READ")):
        for role in roles:
            for party in _role_parties(role, providers):
                if only is None or party == only:
                    out.add(Grant(principal(party), "topic", pattern, name or spec.name,
                                  operation))  # type: ignore[arg-type]
    return out


def _provider_family(providers: tuple[str, ...]) -> set[Grant]:
    """Provider request topics: the provider's own grants literal, the shared roles' grants
    prefixed (so a provider joining later needs no new platform or auditor ACL)."""
    out: set[Grant] = set()
    for pid in providers:
        out |= _topic_grants(provider_requests_spec(pid), providers, only=provider_party(pid))
    template = provider_requests_spec(providers[0] if providers else "any")
    for role in {*template.producers, *template.consumers}:
        if role.startswith("provider:"):
            continue
        for grant in _topic_grants(template, providers, pattern="prefixed",
                                   name=PROVIDER_REQUESTS_PREFIX):
            if grant.principal in {principal(p) for p in _role_parties(role, providers)}:
                out.add(grant)
    return out


_APP_TOPIC_OPERATIONS: tuple[Operation, ...] = ("READ", "WRITE", "CREATE")


def _app_grants(party: str, app_id: str, own_topics: Iterable[str]) -> set[Grant]:
    """A Faust app's own topics, consumer group and transactional ids."""
    who = principal(party)
    out = {Grant(who, "topic", "literal", t, op)
           for t in (*own_topics, leader_topic(app_id))
           for op in _APP_TOPIC_OPERATIONS}
    out.add(Grant(who, "group", "literal", app_id, "READ"))
    out.add(Grant(who, "transactional_id", "prefixed", f"{app_id}-", "WRITE"))
    return out


def grants(providers: Iterable[str] = ()) -> tuple[Grant, ...]:
    """Every ACL of a system with ``providers``, sorted (principal, resource, operation)."""
    ids = tuple(dict.fromkeys(providers))
    out: set[Grant] = set()
    for spec in catalogue():
        out |= _topic_grants(spec, ids)
    out |= _provider_family(ids)
    changelogs = changelog_specs(ids)
    for spec in changelogs:  # readers other than the owner (the auditor)
        out |= {g for g in _topic_grants(spec, ids) if g.operation == "READ"}
    out |= _app_grants(PLATFORM_PARTY, platform_app_id(),
                       [s.name for s in changelogs if s.name.startswith(platform_app_id() + "-")])
    for pid in ids:
        app = provider_app_id(pid)
        out |= _app_grants(provider_party(pid), app,
                           [s.name for s in changelogs if s.name.startswith(app + "-")
                            and s.producers == (f"provider:{pid}",)])
    out.add(Grant(principal(AUDITOR_PARTY), "group", "prefixed", f"{NAMESPACE}-audit-",
                  "DESCRIBE"))
    # the operator is a super user: its catalogue roles need no ACL of their own
    return tuple(sorted(g for g in out if g.principal != OPERATOR_PRINCIPAL))


def grants_of(party: str, providers: Iterable[str] = ()) -> tuple[Grant, ...]:
    """The ACLs of one party."""
    ids = tuple(dict.fromkeys(providers))
    if party.startswith("provider-") and party[len("provider-"):] not in ids:
        ids = (*ids, party[len("provider-"):])
    who = principal(party)
    return tuple(g for g in grants(ids) if g.principal == who)
