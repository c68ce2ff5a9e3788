"""Each party's client settings for the bus: TLS, SASL/SCRAM-SHA-512 and its own identity.

``client_security(party)`` is the one place a Kafka client learns how to connect as ``party``
(``platform``, ``provider-<id>``, ``terminal``, ``auditor``, ``operator``): the cluster's
security mode, the CA to trust, and the party's SCRAM user name and password, the password
opened from the party's own vault (``cardbus.vault``: a sealed secret, never an argument or a
log field). It gives the same settings in the forms the clients want: ``aiokafka()`` keyword
arguments, ``faust()`` app settings, ``librdkafka()`` config (confluent-kafka's admin client,
kcat), and ``properties()`` files for kcat and Kafka's own tools.

The mode, in this order: ``CARDBUS_KAFKA_SECURITY`` (``sasl_ssl`` or ``plaintext``) with
``CARDBUS_KAFKA_CA`` (the CA file); else what the local cluster's state records
(``cardbus broker start`` secured, or ``--insecure``: the cluster ``CARDBUS_KAFKA_CLUSTER``
names, or the default one when the bootstrap is its address); else ``sasl_ssl``, which then
needs a CA.

Where the vaults are: the ``operator`` is the cluster's administrator, so its vault sits with the
cluster (``<cluster>/parties/operator``); every other party's vault is in the state folder
(``$CARDBUS_HOME/parties/<party>``) unless ``home`` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faust

from cardbus import vault
from cardbus.errors import ConfigError
from cardbus.settings import settings
from streams import broker, tls
from streams.acls import OPERATOR_PARTY, user_name
from streams.brokersec import MECHANISM, secret_name

Protocol = Literal["SASL_SSL", "PLAINTEXT"]
ENV_SECURITY, ENV_CA = "CARDBUS_KAFKA_SECURITY", "CARDBUS_KAFKA_CA"


@dataclass(frozen=True)
class BusMode:
    """How the cluster is reached: the protocol and the CA clients trust."""

    protocol: Protocol
    ca: Path | None = None
    cluster_home: Path | None = None  # a local cluster's folder (the operator's vault)


def bus_mode(bootstrap: str | None = None) -> BusMode:
    """The cluster's security mode (see the module docstring)."""
    s = settings()
    env = s.kafka_security
    if env:
        ca = s.kafka_ca
        local = _local_cluster(bootstrap)
        return BusMode("SASL_SSL" if env == "sasl_ssl" else "PLAINTEXT",
                       Path(ca) if ca else (tls.ca_file(local.home) if local else None),
                       local.home if local else None)
    local = _local_cluster(bootstrap)
    if local is not None:
        if local.insecure:
            return BusMode("PLAINTEXT", None, local.home)
        return BusMode("SASL_SSL", tls.ca_file(local.home), local.home)
    ca = s.kafka_ca
    return BusMode("SASL_SSL", Path(ca) if ca else None)


def _local_cluster(bootstrap: str | None) -> broker.Cluster | None:
    """The local cluster's record: the one ``CARDBUS_KAFKA_CLUSTER`` names (whatever address
    reaches it, a proxy too), else the default one if ``bootstrap`` is its address."""
    cluster = broker.Cluster.load(broker.default_home())
    if cluster is None:
        return None
    if settings().kafka_cluster:
        return cluster
    if bootstrap and set(bootstrap.split(",")) != set(cluster.bootstrap.split(",")):
        return None
    return cluster


def vault_home(party: str, mode: BusMode, home: Path | None = None) -> Path | None:
    """The state folder holding ``party``'s vault (``None``: the default state folder)."""
    if party == OPERATOR_PARTY and mode.cluster_home is not None:
        return mode.cluster_home
    return home


@dataclass(frozen=True)
class ClientSecurity:
    """One party's way onto the bus. ``repr`` never shows the password."""

    party: str
    protocol: Protocol
    username: str | None = None
    ca: Path | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def secured(self) -> bool:
        return self.protocol == "SASL_SSL"

    @property
    def principal(self) -> str:
        """The principal the cluster sees (``User:ANONYMOUS`` without authentication)."""
        return f"User:{self.username}" if self.username else "User:ANONYMOUS"

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the cluster's CA only."""
        if self.ca is None:
            raise ConfigError(f"no CA certificate for {self.party}: set {ENV_CA}")
        return tls.client_context(self.ca)

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``
        (add ``bootstrap_servers`` and the client's own settings)."""
        if not self.secured:
            return {"security_protocol": "PLAINTEXT"}
        return {"security_protocol": "SASL_SSL", "ssl_context": self.ssl_context(),
                "sasl_mechanism": MECHANISM, "sasl_plain_username": self.username,
                "sasl_plain_password": self.password}

    def faust(self) -> dict[str, Any]:
        """Settings for ``faust.App`` (faust-streaming 0.15 hands ``SASLCredentials`` with an
        ``ssl_context`` to aiokafka as ``SASL_SSL``: ``credentials_to_aiokafka_auth``)."""
        if not self.secured:
            return {}
        return {"broker_credentials": faust.SASLCredentials(
            username=self.username, password=self.password, ssl_context=self.ssl_context(),
            mechanism=MECHANISM)}

    def librdkafka(self) -> dict[str, str]:
        """librdkafka configuration (confluent-kafka, kcat)."""
        if not self.secured:
            return {"security.protocol": "plaintext"}
        assert self.username is not None and self.password is not None and self.ca is not None
        return {"security.protocol": "sasl_ssl", "sasl.mechanisms": MECHANISM,
                "sasl.username": self.username, "sasl.password": self.password,
                "ssl.ca.location": str(self.ca)}

    def properties(self, bootstrap: str, flavour: Literal["kcat", "java"] = "kcat") -> str:
        """A client properties file: librdkafka's keys (kcat ``-F``) or Java's (Kafka's tools
        ``--command-config``)."""
        lines = [f"# CardBus bus credentials of {self.party} ({self.principal}): keep private",
                 f"bootstrap.servers={bootstrap}"]
        if flavour == "kcat":
            lines += [f"{k}={v}" for k, v in self.librdkafka().items()]
        elif not self.secured:
            lines.append("security.protocol=PLAINTEXT")
        else:
            assert self.password is not None and self.ca is not None
            pw = self.password.replace("\\", "\\\\").replace('"', '\\"')
            lines += ["security.protocol=SASL_SSL", f"sasl.mechanism={MECHANISM}",
                      "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                      f'required username="{self.username}" password="{pw}";',
                      "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca}"]
        return "\n".join(lines) + "\n"


TLS_CLOSE_GRACE_S = 0.25
"""aiokafka closes a TLS connection without waiting for the TLS shutdown (close_notify, one
round trip to the broker); an event loop closed at once leaves such a transport to the garbage
collector (a ``ResourceWarning``, an error under pytest). Short-lived loops (a CLI command's
``asyncio.run``, a test) wait this long after closing their clients."""


async def settle_tls_closes() -> None:
    """Let TLS connections that aiokafka just closed finish their shutdown (see above)."""
    await asyncio.sleep(TLS_CLOSE_GRACE_S)


def client_security(party: str, bootstrap: str | None = None, *,
                    home: Path | None = None) -> ClientSecurity:
    """How ``party`` connects to the cluster at ``bootstrap`` (its vault opened in ``home``)."""
    mode = bus_mode(bootstrap)
    if mode.protocol == "PLAINTEXT":
        return ClientSecurity(party, "PLAINTEXT")
    password = vault.open_secret(party, secret_name(party), vault_home(party, mode, home))
    return ClientSecurity(party, "SASL_SSL", user_name(party), mode.ca, password)


def aiokafka_kwargs(party: str, bootstrap: str, *, home: Path | None = None) -> dict[str, Any]:
    """``bootstrap_servers`` and the security settings of ``party`` for an aiokafka client."""
    return {"bootstrap_servers": bootstrap,
            **client_security(party, bootstrap, home=home).aiokafka()}


def faust_settings(party: str, bootstrap: str, *, home: Path | None = None) -> dict[str, Any]:
    """The ``faust.App`` settings (``broker_credentials``) of ``party``; empty when plaintext."""
    return client_security(party, bootstrap, home=home).faust()


def write_properties(party: str, bootstrap: str, path: Path, *,
                     flavour: Literal["kcat", "java"] = "kcat",
                     home: Path | None = None) -> Path:
    """Write ``party``'s client properties to ``path`` with mode 0600 (created that way, never
    readable by others for an instant)."""
    text = client_security(party, bootstrap, home=home).properties(bootstrap, flavour)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
