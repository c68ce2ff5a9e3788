"""The secured local cluster's broker side: listener settings, certificates, the operator.

Listeners of a secured node (all on 127.0.0.1):

- ``CLIENT`` (the bootstrap port): ``SASL_SSL``, SCRAM-SHA-512 only;
- ``INTERNAL`` (port + 200): ``SSL`` with ``ssl.client.auth=required``, inter-broker traffic;
- ``CONTROLLER`` (port + 100): ``SSL`` with ``ssl.client.auth=required``. KRaft cannot use SCRAM
  on the controller listener (credentials live in the metadata the controllers serve), so nodes
  prove themselves to each other with their certificates.

A node certificate's subject ``CN=broker-<n>,O=CardBus`` maps to ``User:broker``
(``ssl.principal.mapping.rules``); only the cluster's own CA is trusted, and only nodes get
certificates from it, so no client can become ``User:broker``.

The operator (``User:operator``, a super user) is the cluster's administrator: its vault is the
cluster's (``<cluster>/parties/operator``), its SCRAM credential is part of the cluster's
bootstrap metadata, written when the node storage is formatted.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cardbus import vault
from streams import tls
from streams.acls import BROKER_PRINCIPAL, OPERATOR_PARTY, OPERATOR_PRINCIPAL, user_name

MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
SECRET_PREFIX = "kafka-scram:"  # noqa: S105 - a vault entry name, not a secret
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


def secret_name(party: str) -> str:
    """The name of ``party``'s SCRAM password in its vault (per user name, so one vault can
    hold the credentials of several namespaces)."""
    return SECRET_PREFIX + user_name(party)


def new_password() -> str:
    """A fresh SCRAM password (256 bits, URL-safe characters only)."""
    return secrets.token_urlsafe(32)


def listener_properties(home: Path, node: int, port: int, cport: int, iport: int) -> list[str]:
    """The listener, TLS, SASL and authorizer settings of node ``node``."""
    keystore = tls.node_keystore(home, node)
    return [
        f"listeners=CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{iport},"
        f"CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{iport}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name=INTERNAL",
        f"listener.name.client.sasl.enabled.mechanisms={MECHANISM}",
        f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config={_SCRAM_MODULE} required;",
        "listener.name.internal.ssl.client.auth=required",
        "listener.name.controller.ssl.client.auth=required",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca_file(home)}",
        "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
        "ssl.principal.mapping.rules=RULE:^CN=broker-[0-9]+,O=CardBus$/broker/,DEFAULT",
        f"authorizer.class.name={AUTHORIZER}",
        "allow.everyone.if.no.acl.found=false",
        f"super.users={BROKER_PRINCIPAL};{OPERATOR_PRINCIPAL}",
    ]


def prepare(home: Path, brokers: int) -> None:
    """Make, once, the CA, each node's keystore and the operator's credential."""
    tls.ensure_ca(home)
    for node in range(1, brokers + 1):
        tls.ensure_node_keystore(home, node)
    vault.create(OPERATOR_PARTY, home)
    if not vault.has_secret(OPERATOR_PARTY, secret_name(OPERATOR_PARTY), home):
        vault.seal_secret(OPERATOR_PARTY, secret_name(OPERATOR_PARTY), new_password(), home)


def operator_password(home: Path) -> str:
    """The operator's SCRAM password, from the cluster's operator vault."""
    return vault.open_secret(OPERATOR_PARTY, secret_name(OPERATOR_PARTY), home)


def operator_scram_arg(home: Path) -> str:
    """The storage tool's ``--add-scram`` value for the operator (goes in a 0600 argfile)."""
    return (f"{MECHANISM}=[name={user_name(OPERATOR_PARTY)},password={operator_password(home)},"
            f"iterations={SCRAM_ITERATIONS}]")


def operator_aiokafka(home: Path) -> dict[str, Any]:
    """aiokafka settings of the operator (the readiness check of ``cardbus broker start``)."""
    return {"security_protocol": "SASL_SSL", "ssl_context": tls.client_context(tls.ca_file(home)),
            "sasl_mechanism": MECHANISM, "sasl_plain_username": user_name(OPERATOR_PARTY),
            "sasl_plain_password": operator_password(home)}
