"""The ACL model: built from the catalogue's roles, least privilege per party (no broker)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cardbus.errors import ConfigError
from streams import acls, topics
from streams.acls import Grant, grants, grants_of, principal
from streams.topics import (
    NAMESPACE,
    PROVIDER_REQUESTS_PREFIX,
    PROVIDER_RESULTS,
    TERMINAL_KEYS,
    TERMINAL_RESULTS,
    catalogue,
    changelog_specs,
    provider_requests_topic,
)

PROVIDERS = ("bank-a", "bank-b", "transit")


def topic_ops(party: str, providers: tuple[str, ...] = PROVIDERS) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for g in grants_of(party, providers):
        if g.resource_type == "topic":
            key = g.name + ("*" if g.pattern == "prefixed" else "")
            out.setdefault(key, set()).add(g.operation)
    return out


def test_every_catalogue_role_is_a_grant_and_every_topic_grant_a_catalogue_role() -> None:
    """The catalogue and the ACLs cannot drift: each producer/consumer role of a topic is a
    WRITE/READ grant, and each topic grant comes from a role (or is the app's own topic)."""
    table = set(grants(PROVIDERS))
    own_prefixes = (f"{NAMESPACE}-platform-", *(f"{NAMESPACE}-provider-{p}-" for p in PROVIDERS))
    for spec in catalogue(PROVIDERS):
        for roles, op in ((spec.producers, "WRITE"), (spec.consumers, "READ")):
            for role in roles:
                if role == topics.OPERATOR:
                    continue  # a super user
                for party in acls._role_parties(role, PROVIDERS):
                    name, pattern = spec.name, "literal"
                    if spec.name.startswith(PROVIDER_REQUESTS_PREFIX) and \
                            not party.startswith("provider-"):
                        name, pattern = PROVIDER_REQUESTS_PREFIX, "prefixed"
                    assert Grant(principal(party), "topic", pattern, name, op) in table, \
                        (spec.name, role, op)
    for g in table:
        if g.resource_type != "topic" or g.name.startswith(own_prefixes):
            continue
        specs = [s for s in catalogue(PROVIDERS) if s.name.startswith(g.name)]
        assert specs, g


def test_a_role_in_the_catalogue_changes_the_grants() -> None:
    """Changing who reads a topic in its spec is changing the ACLs (same function, new spec)."""
    spec = replace(TERMINAL_KEYS, consumers=(*TERMINAL_KEYS.consumers, topics.PLATFORM))
    made = acls._topic_grants(spec, PROVIDERS)
    assert Grant(principal("platform"), "topic", "literal", TERMINAL_KEYS.name, "READ") in made


def test_a_bank_reads_only_its_own_request_topic() -> None:
    ops = topic_ops("provider-bank-a")
    reads = {t for t, o in ops.items() if "READ" in o}
    own = {t for t in reads if t.startswith(f"{NAMESPACE}-provider-bank-a-")}  # its changelogs
    assert reads - own == {provider_requests_topic("bank-a")}
    assert provider_requests_topic("bank-b") not in ops
    assert "WRITE" not in ops.get(TERMINAL_RESULTS.name, set())
    assert ops[PROVIDER_RESULTS.name] == {"WRITE"}


def test_the_terminal_fleet_has_no_group_and_never_writes_results() -> None:
    mine = grants_of("terminal", PROVIDERS)
    assert not [g for g in mine if g.resource_type in ("group", "transactional_id")]
    ops = topic_ops("terminal")
    assert ops[TERMINAL_RESULTS.name] == {"READ"}
    assert ops[TERMINAL_KEYS.name] == {"READ"}
    assert PROVIDER_RESULTS.name not in ops


def test_the_auditor_reads_everything_writes_only_its_findings_commits_nothing() -> None:
    mine = grants_of("auditor", PROVIDERS)
    assert {g.operation for g in mine} == {"READ", "WRITE", "DESCRIBE"}
    assert [g for g in mine if g.operation == "WRITE"] == [
        Grant(principal("auditor"), "topic", "literal", topics.AUDIT_FINDINGS.name, "WRITE")]
    assert [g for g in mine if g.resource_type == "group"] == [
        Grant(principal("auditor"), "group", "prefixed", f"{NAMESPACE}-audit-", "DESCRIBE")]
    reads = {g.name for g in mine if g.resource_type == "topic"}
    assert {s.name for s in catalogue()} <= reads
    assert PROVIDER_REQUESTS_PREFIX in reads  # providers that join later too
    assert f"{NAMESPACE}-platform-platform-keys-changelog" in reads


def test_apps_own_their_changelogs_group_and_transactional_ids() -> None:
    bank = grants_of("provider-bank-a", PROVIDERS)
    changelogs = {s.name for s in changelog_specs(["bank-a"])
                  if s.name.startswith(f"{NAMESPACE}-provider-bank-a-")}
    for name in changelogs:
        assert {g.operation for g in bank if g.name == name} == {"READ", "WRITE", "CREATE"}
    assert Grant(principal("provider-bank-a"), "group", "literal",
                 f"{NAMESPACE}-provider-bank-a", "READ") in bank
    others = {g.name for g in grants_of("provider-bank-b", PROVIDERS)}
    assert not changelogs & others


def test_platform_writes_every_provider_topic_through_one_prefix() -> None:
    ops = topic_ops("platform")
    assert ops[PROVIDER_REQUESTS_PREFIX + "*"] == {"WRITE"}
    assert not [t for t in ops if t.startswith(PROVIDER_REQUESTS_PREFIX) and not t.endswith("*")]


def test_principals_carry_the_namespace_but_the_operator_is_the_clusters() -> None:
    assert principal("provider-bank-a") == f"User:{NAMESPACE}-provider-bank-a"
    assert principal("operator") == "User:operator"
    assert not [g for g in grants(PROVIDERS) if g.principal == "User:operator"]


def test_an_unknown_role_fails_loudly() -> None:
    spec = replace(TERMINAL_KEYS, consumers=("somebody",))
    with pytest.raises(ConfigError, match="somebody"):
        acls._topic_grants(spec, PROVIDERS)


def test_only_the_auditor_writes_findings_and_only_it_and_the_operator_read_them() -> None:
    """``cardbus audit --follow`` publishes to the findings topic: its one write grant; no
    other party may write (or read) a finding."""
    name = topics.AUDIT_FINDINGS.name
    on_findings = {(g.principal, g.operation) for g in grants(PROVIDERS) if g.name == name}
    assert on_findings == {(principal("auditor"), "WRITE"), (principal("auditor"), "READ")}
