"""Bus identities on the cluster: SCRAM credentials and ACLs, made and rotated by the operator.

aiokafka 0.14's admin client has neither ACLs nor SCRAM credential calls (no CreateAcls,
AlterUserScramCredentials), so this module uses confluent-kafka's ``AdminClient`` (librdkafka),
in process: passwords go from the party's vault to the broker without a command line, an
argument file or a log line. It connects as the operator (``User:operator``, a super user).

- ``ensure_parties``: each party gets a password sealed in its vault (made once), the broker
  gets that password as the party's SCRAM-SHA-512 credential (an upsert: a fresh cluster and an
  existing vault meet), and every ACL of ``streams.acls`` is created (idempotent);
- ``rotate``: a new password on the broker, then in the vault. Connections that are already
  authenticated stay up (Kafka checks SCRAM when a connection opens, and CardBus sets no
  ``connections.max.reauth.ms``), so running workers go on; each process uses the new password
  from the next time it opens its vault, i.e. when it next starts: restart them one by one.

On a cluster started ``--insecure`` there is nothing to do: no authentication, no authorizer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from cardbus import vault
from cardbus.errors import BrokerError
from cardbus.logs import get_logger
from streams.access import diagnose_connect
from streams.acls import OPERATOR_PARTY, Grant, Operation, Pattern, grants, parties, user_name
from streams.acls import ResourceType as GrantResource
from streams.brokersec import SCRAM_ITERATIONS, new_password, secret_name
from streams.security import (
    ClientSecurity,
    bus_mode,
    client_security,
    settle_tls_closes,
    vault_home,
)

log = get_logger("streams.credentials")
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
_OPERATIONS: dict[str, Operation] = {o: o for o in ("READ", "WRITE", "CREATE", "DESCRIBE")}
TIMEOUT_S = 30.0
USABLE_TIMEOUT_S = 60.0
"""How long to wait for a written credential to authenticate: a KRaft broker applies it when
its metadata record reaches it (seen up to ~3 s on a loaded 2-core machine)."""
_RESOURCE: dict[GrantResource, ResourceType] = {
    "topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID}
_PATTERN: dict[Pattern, ResourcePatternType] = {
    "literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}


@dataclass
class ProvisionReport:
    """What ``ensure_parties`` did (names only, never a password)."""

    secured: bool = True
    new_passwords: list[str] = field(default_factory=list)  # parties whose vault got one
    users: list[str] = field(default_factory=list)  # SCRAM users written to the cluster
    acls: int = 0


def admin_as(party: str, bootstrap: str) -> AdminClient:
    """An admin client connected as ``party``."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 15000,
                            "logger": _LIBRDKAFKA_LOG,  # through logging, not straight to fd 2
                            **client_security(party, bootstrap).librdkafka()}
    return AdminClient(conf)


def operator_admin(bootstrap: str) -> AdminClient:
    """An admin client connected as the operator."""
    return admin_as(OPERATOR_PARTY, bootstrap)


def authorized_operations(bootstrap: str, party: str, topics: Iterable[str]
                          ) -> dict[str, set[str]]:
    """What the cluster itself says ``party`` may do on each topic (KIP-430: the broker's
    authorizer answers for the asking principal; nothing is read or written). A topic the party
    may not even describe maps to an empty set."""
    names = list(dict.fromkeys(topics))
    admin = admin_as(party, bootstrap)  # kept referenced until every future is resolved
    futures = admin.describe_topics(TopicCollection(names), include_authorized_operations=True)
    out: dict[str, set[str]] = {}
    for name, fut in futures.items():
        try:
            desc = fut.result(timeout=TIMEOUT_S)
        except KafkaException:
            out[name] = set()
            continue
        out[name] = {op.name for op in (desc.authorized_operations or [])}
    return out


def _wait(futures: dict[Any, Future[Any]], what: str) -> None:
    for key, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise BrokerError(f"{what} {key} failed: {exc.args[0].str()}") from None
        except TimeoutError:
            raise BrokerError(f"{what} {key}: no answer from Kafka within {TIMEOUT_S:.0f}s"
                              ) from None


def _binding(g: Grant) -> AclBinding:
    return AclBinding(_RESOURCE[g.resource_type], g.name, _PATTERN[g.pattern], g.principal, "*",
                      AclOperation[g.operation], AclPermissionType.ALLOW)


def _upsert(admin: AdminClient, passwords: dict[str, str]) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    alterations = [UserScramCredentialUpsertion(user, info, pw.encode())
                   for user, pw in passwords.items()]
    if alterations:
        _wait(admin.alter_user_scram_credentials(alterations),  # type: ignore[arg-type]
              "writing the SCRAM credential of")


def _party_password(party: str, home: Path | None, report: ProvisionReport) -> str:
    vault.create(party, home)
    name = secret_name(party)
    if not vault.has_secret(party, name, home):
        vault.seal_secret(party, name, new_password(), home)
        report.new_passwords.append(party)
    return vault.open_secret(party, name, home)


def ensure_parties(bootstrap: str, providers: Iterable[str], *,
                   home: Path | None = None) -> ProvisionReport:
    """Credentials and ACLs for the platform, ``providers``, the terminal fleet and the
    auditor (idempotent); nothing on an insecure cluster."""
    ids = tuple(dict.fromkeys(providers))
    if bus_mode(bootstrap).protocol != "SASL_SSL":
        return ProvisionReport(secured=False)
    report = ProvisionReport()
    passwords = {user_name(p): _party_password(p, home, report)
                 for p in parties(ids) if p != OPERATOR_PARTY}
    admin = operator_admin(bootstrap)
    _upsert(admin, passwords)
    report.users = sorted(passwords)
    _await_usable(bootstrap, [client_security(p, bootstrap, home=home)
                              for p in parties(ids) if p != OPERATOR_PARTY])
    wanted = grants(ids)
    _wait(admin.create_acls([_binding(g) for g in wanted]), "creating ACL")
    report.acls = len(wanted)
    log.info("bus identities ensured", users=len(passwords), acls=len(wanted),
             new_passwords=report.new_passwords)
    return report


def rotate(bootstrap: str, party: str, *, home: Path | None = None) -> str:
    """Give ``party`` a new SCRAM password (cluster first, then its vault); returns its user."""
    mode = bus_mode(bootstrap)
    if mode.protocol != "SASL_SSL":
        raise BrokerError("the cluster runs --insecure: there are no credentials to rotate")
    where = vault_home(party, mode, home)
    name = secret_name(party)
    if not vault.has_secret(party, name, where):
        raise BrokerError(f"{party} has no bus credential yet: run `cardbus credentials "
                          "ensure` first")
    password = new_password()
    _upsert(operator_admin(bootstrap), {user_name(party): password})
    old = client_security(party, bootstrap, home=home)
    _await_usable(bootstrap, [ClientSecurity(party, old.protocol, old.username, old.ca,
                                             password)])
    vault.seal_secret(party, name, password, where)
    log.info("bus credential rotated", party=party, user=user_name(party))
    return user_name(party)


def _await_usable(bootstrap: str, who: list[ClientSecurity]) -> None:
    """Return once each of ``who`` authenticates (``BrokerError`` after
    ``USABLE_TIMEOUT_S``); runs its own event loop on a helper thread, so callers may have one."""

    async def check() -> list[str]:
        pending = list(who)
        deadline = time.monotonic() + USABLE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if await diagnose_connect(bootstrap, s) is not None]
            if pending:
                await asyncio.sleep(0.2)
        await settle_tls_closes()
        return [s.principal for s in pending]

    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(asyncio.run, check()).result()
    if refused:
        raise BrokerError(f"credentials written but still refused after {USABLE_TIMEOUT_S:.0f}s:"
                          f" {', '.join(refused)}")


def cluster_grants(bootstrap: str) -> set[Grant]:
    """The ALLOW ACLs the cluster holds, as ``Grant``s (those CardBus can express)."""
    admin = operator_admin(bootstrap)
    # None matches any name, principal and host (the stubs say str; librdkafka takes NULL)
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,  # type: ignore[arg-type]
                           None, None, AclOperation.ANY, AclPermissionType.ANY)  # type: ignore[arg-type]
    try:
        bindings = admin.describe_acls(flt).result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise BrokerError(f"listing ACLs failed: {exc.args[0].str()}") from None
    kinds = {v: k for k, v in _RESOURCE.items()}
    patterns = {v: k for k, v in _PATTERN.items()}
    out: set[Grant] = set()
    for b in bindings:
        if (b.restype in kinds and b.resource_pattern_type in patterns
                and b.permission_type == AclPermissionType.ALLOW
                and b.operation.name in _OPERATIONS):
            out.add(Grant(b.principal, kinds[b.restype], patterns[b.resource_pattern_type],
                          b.name, _OPERATIONS[b.operation.name]))
    return out
