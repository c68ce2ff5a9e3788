"""A real Apache Kafka broker on this machine, without Docker: fetch, format, start, stop.

Kafka's jars come from Maven Central through ``deploy/kafka/pom.xml`` (Maven keeps its own cache
in ``~/.m2``, so a second fetch is offline-fast). Each node runs as ``java -cp libs/* kafka.Kafka
server.properties`` in KRaft combined mode (broker + controller), listening on 127.0.0.1 only.

One node is the local default. ``brokers=3`` starts a three-node quorum on loopback ports with
replication factor 3 and ``min.insync.replicas=2``, so the loss of one node is survivable.

Secured unless started ``insecure`` (``streams.brokersec`` writes the settings):

- clients: ``CLIENT`` listener, SASL_SSL with SCRAM-SHA-512 (TLS 1.2+, the cluster's own CA);
- between nodes (``INTERNAL``, replication) and to the controllers (``CONTROLLER``): TLS with
  client certificates (mutual TLS), each node ``CN=broker-<n>`` mapped to ``User:broker``. On
  loopback encryption buys little, but authentication does: a plaintext controller or
  inter-broker port would let any local process act as a broker (a super user);
- ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``; super users
  ``User:broker`` and ``User:operator``. The operator's SCRAM credential is written at format
  time (``--add-scram``, through a 0600 argument file, never on the command line); every other
  party's credential and ACL is created through the Admin API (``streams.credentials``).

State of a cluster (configs, data, logs, pids) lives in one folder, by default
``<state>/kafka/cluster``; the test suite points a throw-away cluster at a temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from cardbus.errors import BrokerError
from cardbus.paths import REPO_ROOT, state_dir
from cardbus.processes import pid_alive
from cardbus.settings import DEFAULT_KAFKA_PORT, settings
from streams import brokersec

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
DEFAULT_PORT = DEFAULT_KAFKA_PORT
CONTROLLER_PORT_OFFSET = 100
INTERNAL_PORT_OFFSET = 200  # the secured cluster's inter-broker (mutual TLS) listener
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
JVM_OPTS = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true")

Progress = Callable[[str], None]
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # nodes this process started (reaped on stop)


def _quiet(_msg: str) -> None:
    return None


# --------------------------------------------------------------------------------------------
# jars


def libs_dir() -> Path:
    """Where the Kafka jars are copied (shared by every cluster folder)."""
    return settings().kafka_libs or state_dir() / "kafka-libs"


def fetch_jars(progress: Progress = _quiet) -> Path:
    """Copy Kafka and its dependencies from Maven Central into ``libs_dir()`` (idempotent)."""
    libs = libs_dir()
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    marker = libs / f".fetched-{digest}"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not installed: run `make setup` (apt-get install maven)")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    progress(f"fetching Apache Kafka jars from Maven Central into {libs} ...")
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise BrokerError(f"fetching Kafka jars failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    marker.touch()
    return libs


def java_binary() -> str:
    """The java to run Kafka with (``$JAVA_HOME/bin/java`` or ``java`` on PATH), 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java is not installed: Kafka needs Java 17+ "
                          "(apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        major = 0
    if major and major < 17:
        raise BrokerError(f"Kafka 4 needs Java 17 or newer, found Java {major} at {java}")
    return java


# --------------------------------------------------------------------------------------------
# cluster description


@dataclass
class Cluster:
    """What a running (or last started) cluster looks like; saved as ``cluster.json``."""

    home: Path
    brokers: int = 1
    port: int = DEFAULT_PORT
    cluster_id: str = ""
    pids: list[int] = field(default_factory=list)
    insecure: bool = False  # plaintext, no authentication, no ACLs (``--insecure`` only)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    @property
    def client_ports(self) -> list[int]:
        return [self.port + i for i in range(self.brokers)]

    @property
    def controller_ports(self) -> list[int]:
        return [self.port + CONTROLLER_PORT_OFFSET + i for i in range(self.brokers)]

    @property
    def internal_ports(self) -> list[int]:
        return [self.port + INTERNAL_PORT_OFFSET + i for i in range(self.brokers)]

    @property
    def all_ports(self) -> list[int]:
        """Every port the cluster listens on."""
        extra = [] if self.insecure else self.internal_ports
        return self.client_ports + self.controller_ports + extra

    def node_dir(self, node: int) -> Path:
        return self.home / f"node-{node}"

    def save(self) -> None:
        data = asdict(self)
        data["home"] = str(self.home)
        (self.home / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> Cluster | None:
        path = home / "cluster.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["home"] = Path(data["home"])
        return cls(**data)


def default_home() -> Path:
    """The local cluster's folder: ``$CARDBUS_KAFKA_CLUSTER``, else ``<state>/kafka/cluster``."""
    return settings().kafka_cluster or state_dir() / "kafka" / "cluster"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def free_port_block(count: int, start: int = 29092) -> int:
    """A base port such that ``base..base+count-1`` and their controller ports are free."""
    for base in range(start, 60000, 7):
        ports = [base + i for i in range(count)]
        ports += [p + off for p in ports for off in (CONTROLLER_PORT_OFFSET, INTERNAL_PORT_OFFSET)]
        if not any(port_open(p) for p in ports):
            return base
    raise BrokerError("no free loopback ports for a Kafka cluster")


def _properties(cluster: Cluster, node: int) -> str:
    n = cluster.brokers
    rf = 3 if n >= 3 else 1
    isr = 2 if n >= 3 else 1
    voters = ",".join(
        f"{i + 1}@127.0.0.1:{cluster.controller_ports[i]}" for i in range(n)
    )
    port = cluster.client_ports[node - 1]
    cport = cluster.controller_ports[node - 1]
    if cluster.insecure:
        listeners = [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]
    else:
        listeners = brokersec.listener_properties(
            cluster.home, node, port, cport, cluster.internal_ports[node - 1])
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        *listeners,
        f"log.dirs={cluster.node_dir(node) / 'data'}",
        "num.network.threads=2",
        "num.io.threads=4",
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        f"offsets.topic.replication.factor={rf}",
        "offsets.topic.num.partitions=12",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        "transaction.state.log.num.partitions=12",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


def _log_tail(cluster: Cluster, lines: int = 40) -> str:
    parts = []
    for node in range(1, cluster.brokers + 1):
        for name in ("server.log", "stdout.log"):
            path = cluster.node_dir(node) / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts) or "(no broker log was written)"


# --------------------------------------------------------------------------------------------
# lifecycle


def status(home: Path | None = None) -> Cluster | None:
    """The cluster in ``home`` if all its nodes run, else ``None``."""
    cluster = Cluster.load(home or default_home())
    if cluster is None or not cluster.pids:
        return None
    if all(pid_alive(pid) for pid in cluster.pids):
        return cluster
    return None


def start(
    home: Path | None = None,
    *,
    brokers: int = 1,
    port: int = DEFAULT_PORT,
    progress: Progress = _quiet,
    timeout_s: float = START_TIMEOUT_S,
    insecure: bool = False,
) -> tuple[Cluster, bool]:
    """Start a cluster, secured unless ``insecure``; returns ``(cluster, started)``; ``started``
    is False if one was running (in whatever mode it runs)."""
    if brokers not in (1, 3):
        raise BrokerError("--brokers must be 1 or 3")
    home = home or default_home()
    running = status(home)
    if running is not None:
        return running, False
    java = java_binary()
    libs = fetch_jars(progress)
    previous = Cluster.load(home)
    if previous and (previous.brokers != brokers or previous.port != port
                     or previous.insecure != insecure):
        progress(f"cluster shape changed ({_shape(previous)} -> "
                 f"{_shape(Cluster(home, brokers, port, insecure=insecure))}): wiping {home}")
        shutil.rmtree(home)
        previous = None
    home.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(home=home, brokers=brokers, port=port, insecure=insecure,
                      cluster_id=previous.cluster_id if previous else _new_cluster_id())
    busy = [p for p in cluster.all_ports if port_open(p)]
    if busy:
        raise BrokerError(
            f"port(s) {busy} on 127.0.0.1 are in use by another process: stop it, or choose "
            f"another port with `cardbus broker start --port N`")
    cp = f"{libs}/*"
    if not insecure:
        brokersec.prepare(home, brokers)
    for node in range(1, brokers + 1):
        ndir = cluster.node_dir(node)
        ndir.mkdir(parents=True, exist_ok=True)
        props = ndir / "server.properties"
        props.write_text(_properties(cluster, node))
        if not (ndir / "data" / "meta.properties").exists():
            _format(java, cp, cluster, node, props)
    for node in range(1, brokers + 1):
        ndir = cluster.node_dir(node)
        with (ndir / "stdout.log").open("ab") as out:
            proc = subprocess.Popen(
                [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG4J}",
                 f"-Dkafka.logs.dir={ndir}", "-cp", cp, "kafka.Kafka",
                 str(ndir / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ndir,
            )
        cluster.pids.append(proc.pid)
        _CHILDREN[proc.pid] = proc
    cluster.save()
    progress(f"starting {brokers} Kafka node(s) on {cluster.bootstrap} ...")
    try:
        wait_ready(cluster, timeout_s)
    except BrokerError:
        _terminate(cluster)
        raise
    return cluster, True


def _shape(cluster: Cluster) -> str:
    return f"{cluster.brokers}@{cluster.port}{' insecure' if cluster.insecure else ''}"


def _format(java: str, cp: str, cluster: Cluster, node: int, props: Path) -> None:
    """Format a node's storage; a secured cluster's bootstrap metadata gets the operator's
    SCRAM credential (the arguments go through a 0600 file: no password on a command line)."""
    args = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster.cluster_id}",
            "-c", str(props), "--ignore-formatted"]
    if not cluster.insecure:
        args += ["--add-scram", brokersec.operator_scram_arg(cluster.home)]
    argfile = cluster.node_dir(node) / ".format-args"
    fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(f'"{a}"' for a in args) + "\n")
    try:
        fmt = subprocess.run([java, "-cp", cp, f"@{argfile}"],
                             capture_output=True, text=True, check=False)
    finally:
        argfile.unlink()
    if fmt.returncode != 0:
        raise BrokerError(f"formatting node {node} failed:\n{fmt.stdout}{fmt.stderr}")


def start_on_free_ports(home: Path | None = None, *, brokers: int = 1, start_port: int = 29092,
                        attempts: int = 3, progress: Progress = _quiet,
                        insecure: bool = False) -> Cluster:
    """Start a cluster on the first free port block from ``start_port``; if another process
    takes a port between the probe and the bind, try the next block."""
    error: BrokerError | None = None
    port = start_port
    for _ in range(attempts):
        port = free_port_block(brokers, start=port)
        try:
            cluster, _ = start(home, brokers=brokers, port=port, progress=progress,
                               insecure=insecure)
            return cluster
        except BrokerError as exc:
            if "in use" not in str(exc):
                raise
            error = exc
            progress(f"port {port} was taken meanwhile; trying another")
            port += 7
    assert error is not None
    raise error


def wait_ready(cluster: Cluster, timeout_s: float) -> None:
    """Wait until every node answers a metadata request and sees the whole cluster."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [pid for pid in cluster.pids if not pid_alive(pid)]
        if dead:
            raise BrokerError(
                f"Kafka node(s) exited during start-up (pids {dead}).\n{_log_tail(cluster)}")
        if all(port_open(p) for p in cluster.client_ports) and _cluster_size(cluster) == (
            cluster.brokers
        ):
            return
        time.sleep(0.25)
    raise BrokerError(
        f"Kafka did not answer on {cluster.bootstrap} within {timeout_s:.0f}s.\n"
        f"{_log_tail(cluster)}")


def _cluster_size(cluster: Cluster) -> int:
    """How many brokers the cluster reports in its metadata (0 if it does not answer yet)."""
    import asyncio
    import logging


    auth = {} if cluster.insecure else brokersec.operator_aiokafka(cluster.home)

    async def ask() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=3000,
                                    **auth)
        try:
            await admin.start()
            info = await admin.describe_cluster()
            return len(info.get("brokers", []))
        finally:
            await admin.close()

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(ask())
    except Exception:  # noqa: BLE001 - any failure here means "not ready yet"
        return 0
    finally:
        quiet.setLevel(level)


def _terminate(cluster: Cluster, timeout_s: float = STOP_TIMEOUT_S) -> None:
    for pid in cluster.pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in cluster.pids):
        time.sleep(0.2)
        for pid in cluster.pids:  # reap our own children so they do not linger as zombies
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
    for pid in cluster.pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)


def stop(home: Path | None = None) -> Cluster | None:
    """Stop the cluster in ``home`` by PID; returns it, or ``None`` if none was running."""
    home = home or default_home()
    cluster = Cluster.load(home)
    if cluster is None or not any(pid_alive(p) for p in cluster.pids):
        return None
    _terminate(cluster)
    cluster.pids = []
    cluster.save()
    return cluster


def resolve_bootstrap(explicit: str | None = None) -> str:
    """The cluster to use: ``explicit``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else the running
    ``cardbus broker``; a clear error if there is none."""
    if explicit:
        return explicit
    env = settings().kafka_bootstrap_servers
    if env:
        return env
    cluster = status()
    if cluster is not None:
        return cluster.bootstrap
    raise BrokerError("no Kafka broker: start one with `cardbus broker start`, or pass "
                      "--bootstrap HOST:PORT, or set KAFKA_BOOTSTRAP_SERVERS")


def kill_node(cluster: Cluster, node: int) -> None:
    """SIGKILL one node of a running cluster (fault tests)."""
    os.kill(cluster.pids[node - 1], signal.SIGKILL)


def _new_cluster_id() -> str:
    """A KRaft cluster id (base64url of 16 random bytes), never starting with "-" (a command
    line would read that as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
