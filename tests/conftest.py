"""Shared fixtures: one real Kafka broker per test session, unique names per test.

The broker, in order of preference:
1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (CI starts the deploy/ broker and sets it);
2. where a Docker engine answers, a testcontainers Kafka container;
3. otherwise the deploy/ broker (real Apache Kafka from Maven Central, KRaft), started in a
   temporary folder on free ports and stopped at the end of the session.
Never an in-memory fake.

The deploy/ broker runs secured, as everywhere (TLS, SCRAM-SHA-512, ACLs), and every client
finds its mode, CA and the operator's vault through ``CARDBUS_KAFKA_CLUSTER``;
``CARDBUS_TEST_BUS=insecure`` runs the suite on a plaintext broker instead. The running system's
parties get their credentials in the session's state folder (``cardbus_home``); a test's own raw
clients connect as the operator (``tests.kafka_auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Every test session gets its own topic namespace (topic names and Faust app ids), so a run
# against a long-lived broker never sees an earlier run's events. Set before any CardBus
# module reads it.
os.environ.setdefault("CARDBUS_NAMESPACE", f"cbt-{uuid.uuid4().hex[:8]}")


def _docker_answers() -> bool:
    """True where a Docker engine answers (the testcontainers path)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # a refused socket left to the GC
        try:
            import docker  # testcontainers depends on it

            client = docker.from_env(timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            return True
        except Exception:  # noqa: BLE001 - any failure means "no Docker engine here"
            return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port[,host:port]`` of a real Kafka broker for the whole test session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        from streams import broker

        # a broker this machine started (CI): its record says the mode; keep finding it when
        # tests point CARDBUS_HOME elsewhere
        local = broker.Cluster.load(broker.default_home())
        if local is not None and "CARDBUS_KAFKA_CLUSTER" not in os.environ:
            os.environ["CARDBUS_KAFKA_CLUSTER"] = str(local.home)
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = (
            KafkaContainer()
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        )
        os.environ.setdefault("CARDBUS_KAFKA_SECURITY", "plaintext")  # the container's listener
        with container:
            yield container.get_bootstrap_server()
        return
    from streams import broker

    home = Path(tmp_path_factory.mktemp("kafka"))
    secured = TEST_BUS == "secured"
    cluster = broker.start_on_free_ports(home, insecure=not secured)
    # every client (and worker process) finds the cluster's mode (and CA) there
    os.environ["CARDBUS_KAFKA_CLUSTER"] = str(home)
    try:
        yield cluster.bootstrap
    finally:
        broker.stop(home)


TEST_BUS = os.environ.get("CARDBUS_TEST_BUS", "secured")
SECURED_PROVIDERS = ("bank-a", "bank-b")


@dataclass(frozen=True)
class SecuredBus:
    """A secured cluster with every party's credentials, ACLs and topics."""

    bootstrap: str
    cluster_home: Path  # what CARDBUS_KAFKA_CLUSTER must say (mode, CA, operator's vault)
    vault_home: Path  # what CARDBUS_HOME must say (the parties' vaults)
    providers: tuple[str, ...] = SECURED_PROVIDERS

    def env(self) -> dict[str, str]:
        return {"CARDBUS_KAFKA_CLUSTER": str(self.cluster_home),
                "CARDBUS_HOME": str(self.vault_home)}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def cardbus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's state folder (CARDBUS_HOME of the running system): every party's vault,
    so one principal never has two passwords in two vaults."""
    return Path(tmp_path_factory.mktemp("cardbus-home"))


@pytest.fixture(scope="session")
def secured_bus(kafka_bootstrap: str, cardbus_home: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBus]:
    """The session's broker if it runs secured, else a secured one of its own; with the
    parties of ``SECURED_PROVIDERS`` and the catalogue's topics (made as the operator)."""
    from streams import broker, credentials
    from streams.admin import ensure_topics_sync
    from streams.topics import catalogue

    vaults = cardbus_home
    own: Path | None = None
    session = broker.Cluster.load(broker.default_home())
    if TEST_BUS == "secured" and session is not None and not session.insecure:
        home, bootstrap = session.home, kafka_bootstrap
    else:
        own = home = Path(tmp_path_factory.mktemp("kafka-secured"))
        with _environ({"CARDBUS_KAFKA_CLUSTER": str(home)}):
            bootstrap = broker.start_on_free_ports(home, start_port=31092).bootstrap
    bus = SecuredBus(bootstrap, home, vaults)
    try:
        with _environ(bus.env()):
            credentials.ensure_parties(bootstrap, bus.providers)
            ensure_topics_sync(bootstrap, list(catalogue(bus.providers, with_changelogs=True)))
        yield bus
    finally:
        if own is not None:
            broker.stop(own)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test, for topic and consumer-group names."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


# -- one running CardBus per session (tests/integration and tests/reader share it) ----------

SYSTEM_PROVIDERS = ["bank-a", "bank-b", "bank-c", "transit", "bank-iso"]


@pytest.fixture(scope="session")
def system(kafka_bootstrap: str, cardbus_home: Path) -> Iterator[Any]:
    """Key setup, topics, the platform worker and the bank-a and bank-b workers (other
    providers, such as ``transit``, are set up and started on demand)."""
    from cardbus import ceremony
    from console.commands.admit import admit
    from streams import credentials
    from streams.admin import ensure_topics_sync
    from streams.topics import TopicSettings, catalogue
    from tests.integration.system import System

    home = cardbus_home
    env = {**os.environ, "CARDBUS_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "PYTHONUNBUFFERED": "1"}
    old_home = os.environ.get("CARDBUS_HOME")
    os.environ["CARDBUS_HOME"] = str(home)
    ceremony.setup(home, SYSTEM_PROVIDERS)
    # each party's principal, password (sealed in home) and ACLs (nothing on a plaintext bus)
    credentials.ensure_parties(kafka_bootstrap, SYSTEM_PROVIDERS, home=home)
    report = ensure_topics_sync(kafka_bootstrap, list(catalogue(SYSTEM_PROVIDERS, with_changelogs=True)),
                                TopicSettings())
    assert report is not None
    asyncio.run(admit(kafka_bootstrap, SYSTEM_PROVIDERS, home))  # the operator's act
    sys_ = System(kafka_bootstrap, home, env)
    sys_.worker("platform", "platform", "--timeout", "10")
    sys_.start_provider("bank-a")
    sys_.start_provider("bank-b")
    try:
        yield sys_
    finally:
        sys_.stop_all()
        if old_home is None:
            os.environ.pop("CARDBUS_HOME", None)
        else:
            os.environ["CARDBUS_HOME"] = old_home




_SERVICE_FIXTURES = {"kafka_bootstrap": "broker", "system": "broker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the real broker must be marked ``broker`` (a "unit" selection,
    ``-m 'not broker and not pcsc'``, must never start one): collection fails otherwise."""
    unmarked = []
    for item in items:
        needs = {_SERVICE_FIXTURES[f] for f in getattr(item, "fixturenames", ())
                 if f in _SERVICE_FIXTURES}
        missing = needs - {m.name for m in item.iter_markers()}
        if missing:
            unmarked.append(f"{item.nodeid} (needs {', '.join(sorted(missing))})")
    if unmarked:
        raise pytest.UsageError("tests using a service without its marker:\n  "
                                + "\n  ".join(unmarked))
