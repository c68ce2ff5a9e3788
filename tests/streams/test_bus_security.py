"""Against a real secured cluster (TLS, SCRAM-SHA-512, StandardAuthorizer): each party can do
what the catalogue grants and nothing else, and every refusal is one clear ``BusAccessError``."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError

from cardbus import vault
from cardbus.errors import BusAuthenticationError, BusAuthorizationError
from console.cli import main
from console.commands.credentials import kcat_environment
from streams import access, credentials
from streams.acls import grants, principal
from streams.brokersec import secret_name
from streams.security import (
    ClientSecurity,
    client_security,
    faust_settings,
    settle_tls_closes,
)
from streams.topics import (
    NAMESPACE,
    PROVIDER_RESULTS,
    TERMINAL_RESULTS,
    provider_requests_topic,
    topic_spec,
)
from tests.conftest import SecuredBus

pytestmark = pytest.mark.broker

BANK_A_REQUESTS = provider_requests_topic("bank-a")


@pytest.fixture(autouse=True)
def _bus_env(secured_bus: SecuredBus, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in secured_bus.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture(autouse=True)
async def _tls_closed() -> AsyncIterator[None]:
    """Each test's loop lets the TLS connections its clients closed finish closing."""
    yield
    await settle_tls_closes()


async def produce(bootstrap: str, sec: ClientSecurity, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, request_timeout_ms=10000,
                                **sec.aiokafka())
    try:
        async with access.guarded(sec, bootstrap, operation="WRITE", resource=f"topic {topic}"):
            await producer.start()
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def read_all(bootstrap: str, sec: ClientSecurity, topic: str,
                   until: bytes | None = None) -> list[bytes]:
    """Records of ``topic`` as ``sec`` sees them (group-less, from the start): up to ``until``
    when given (a topic made moments ago may answer its end offsets late), else to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **sec.aiokafka())
    tps = [TopicPartition(topic, p) for p in range(topic_spec(topic).partitions)]
    try:
        async with access.guarded(sec, bootstrap, operation="READ", resource=f"topic {topic}"):
            await consumer.start()
            consumer.assign(tps)
            await access.check_readable(consumer, [topic], sec)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[bytes] = []
            async with asyncio.timeout(30):
                while (until not in out) if until is not None else \
                        [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                    batch = await consumer.getmany(timeout_ms=500)
                    out += [m.value for ms in batch.values() for m in ms if m.value]
            return out
    finally:
        await consumer.stop()


def sec(bus: SecuredBus, party: str) -> ClientSecurity:
    return client_security(party, bus.bootstrap)


def test_the_cluster_holds_exactly_the_declared_acls(secured_bus: SecuredBus) -> None:
    ours = {g for g in credentials.cluster_grants(secured_bus.bootstrap)
            if g.principal.startswith(f"User:{NAMESPACE}-")}
    prefix = f"User:{NAMESPACE}-provider-"  # the session may have set up more providers
    providers = {g.principal[len(prefix):] for g in ours if g.principal.startswith(prefix)}
    assert set(secured_bus.providers) <= providers
    assert ours == set(grants(sorted(providers)))


async def test_a_bank_reads_its_own_requests_and_not_another_banks(
        secured_bus: SecuredBus) -> None:
    marker = f"for-bank-a-{uuid.uuid4().hex}".encode()
    # the platform writes every provider's request topic (one prefixed ACL)
    await produce(secured_bus.bootstrap, sec(secured_bus, "platform"), BANK_A_REQUESTS, marker)
    assert marker in await read_all(secured_bus.bootstrap, sec(secured_bus, "provider-bank-a"),
                                    BANK_A_REQUESTS, until=marker)
    with pytest.raises(BusAuthorizationError) as refused:
        await read_all(secured_bus.bootstrap, sec(secured_bus, "provider-bank-b"),
                       BANK_A_REQUESTS)
    assert refused.value.principal == principal("provider-bank-b")
    assert refused.value.operation == "READ"
    assert str(refused.value) == (
        f"bus: {principal('provider-bank-b')} may not READ topic {BANK_A_REQUESTS}: "
        f"{access.HINT}")


@pytest.mark.parametrize(("party", "topic"), [
    ("provider-bank-a", TERMINAL_RESULTS.name),  # a bank writing terminal results
    ("terminal", PROVIDER_RESULTS.name),  # a terminal writing provider results
    ("auditor", PROVIDER_RESULTS.name),  # the auditor producing anything
])
async def test_writes_outside_a_partys_grants_are_refused(secured_bus: SecuredBus, party: str,
                                                          topic: str) -> None:
    who = sec(secured_bus, party)
    with pytest.raises(BusAuthorizationError) as refused:
        await produce(secured_bus.bootstrap, who, topic, b"{}")
    assert str(refused.value) == f"bus: {who.principal} may not WRITE topic {topic}: " \
                                 f"{access.HINT}"
    auditor = sec(secured_bus, "auditor")  # nothing got through
    assert b"{}" not in await read_all(secured_bus.bootstrap, auditor, topic)


async def test_a_wrong_password_is_refused(secured_bus: SecuredBus) -> None:
    right = sec(secured_bus, "terminal")
    wrong = ClientSecurity(right.party, right.protocol, right.username, right.ca, "not-it")
    with pytest.raises(BusAuthenticationError, match="wrong password or unknown user"):
        await read_all(secured_bus.bootstrap, wrong, TERMINAL_RESULTS.name)


async def test_a_client_without_tls_is_refused(secured_bus: SecuredBus) -> None:
    plain = ClientSecurity("terminal", "PLAINTEXT")
    with pytest.raises(BusAuthenticationError, match="TLS"):
        await read_all(secured_bus.bootstrap, plain, TERMINAL_RESULTS.name)


async def test_the_auditor_cannot_commit(secured_bus: SecuredBus) -> None:
    """The audit reader's own group (manual assignment, no commits) works; a commit does not."""
    auditor = sec(secured_bus, "auditor")
    consumer = AIOKafkaConsumer(bootstrap_servers=secured_bus.bootstrap,
                                group_id=f"{NAMESPACE}-audit-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, isolation_level="read_committed",
                                **auditor.aiokafka())
    tp = TopicPartition(PROVIDER_RESULTS.name, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await consumer.getmany(timeout_ms=500)
        with pytest.raises(GroupAuthorizationFailedError) as refused:
            await consumer.commit({tp: 0})
        mapped = access.refusal(refused.value, auditor, operation="commit", resource="group")
        assert isinstance(mapped, BusAuthorizationError)
        assert auditor.principal in str(mapped)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(("party", "flag", "topic"), [
    ("provider-bank-b", "--read", BANK_A_REQUESTS),
    ("provider-bank-a", "--write", TERMINAL_RESULTS.name),
    ("terminal", "--write", PROVIDER_RESULTS.name),
    ("auditor", "--write", PROVIDER_RESULTS.name),
])
def test_cli_names_principal_and_missing_permission_in_one_line(
        secured_bus: SecuredBus, capsys: pytest.CaptureFixture[str], party: str, flag: str,
        topic: str) -> None:
    assert main(["credentials", "check", party, flag, topic]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    op = "READ" if flag == "--read" else "WRITE"
    assert err == [f"cardbus: error: bus: {principal(party)} may not {op} topic {topic}: "
                   f"{access.HINT}"]


def test_cli_allowed_access_says_so(secured_bus: SecuredBus,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["credentials", "check", "provider-bank-a", "--read", BANK_A_REQUESTS,
                 "--write", PROVIDER_RESULTS.name]) == 0
    out = capsys.readouterr().out
    assert f"{principal('provider-bank-a')} may READ topic {BANK_A_REQUESTS}" in out
    assert f"{principal('provider-bank-a')} may WRITE topic {PROVIDER_RESULTS.name}" in out


def test_cli_wrong_password_and_no_tls_are_one_line(
        secured_bus: SecuredBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    vault.create("terminal", tmp_path)
    vault.seal_secret("terminal", secret_name("terminal"), "a-wrong-password", tmp_path)
    monkeypatch.setenv("CARDBUS_HOME", str(tmp_path))
    assert main(["credentials", "check", "terminal", "--read", TERMINAL_RESULTS.name]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and principal("terminal") in err[0]
    assert "wrong password or unknown user" in err[0]

    monkeypatch.setenv("CARDBUS_KAFKA_SECURITY", "plaintext")
    assert main(["credentials", "check", "terminal", "--read", TERMINAL_RESULTS.name]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes TLS (SASL_SSL) clients only" in err[0]


def _kcat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    kcat = shutil.which("kcat")
    assert kcat is not None
    # the topic may hold other tests' binary records: read them as replaced characters
    return subprocess.run([kcat, *args], capture_output=True, text=True, errors="replace",
                          timeout=60, check=False, env={**os.environ, **env})


async def test_kcat_with_the_kafka_config_file(secured_bus: SecuredBus, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An independent client (kcat, librdkafka) with the file ``cardbus kafka-config`` writes
    reads bank-a's request topic as bank-a, and cannot as bank-b or without credentials."""
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (deploy/install-system.sh installs it)")
    marker = f"kcat-{uuid.uuid4().hex}"
    await produce(secured_bus.bootstrap, sec(secured_bus, "platform"), BANK_A_REQUESTS,
                  marker.encode())
    files = {}
    for party in ("provider-bank-a", "provider-bank-b"):
        files[party] = tmp_path / f"{party}.properties"
        assert main(["kafka-config", party, "--output", str(files[party])]) == 0
        assert stat.S_IMODE(files[party].stat().st_mode) == 0o600
        assert f"wrote {files[party]} (mode 0600)" in capsys.readouterr().out
    env = kcat_environment()
    read = ("-C", "-t", BANK_A_REQUESTS, "-o", "beginning", "-e", "-q", "-f", "%s\n")
    as_a = _kcat(env, "-F", str(files["provider-bank-a"]), *read)
    assert as_a.returncode == 0, as_a.stderr
    assert marker in as_a.stdout.splitlines()
    as_b = _kcat(env, "-F", str(files["provider-bank-b"]), *read)
    assert as_b.returncode != 0 and marker not in as_b.stdout
    assert "Topic authorization failed" in as_b.stderr
    anonymous = _kcat(env, "-b", secured_bus.bootstrap, "-m", "5", *read)
    assert anonymous.returncode != 0 and marker not in anonymous.stdout
    tls_only = _kcat(env, "-b", secured_bus.bootstrap, "-m", "5", "-X", "security.protocol=ssl",
                     "-X", f"ssl.ca.location={secured_bus.cluster_home / 'tls' / 'ca.pem'}",
                     *read)
    assert tls_only.returncode != 0 and marker not in tls_only.stdout


async def test_rotation_refuses_the_old_password_and_takes_the_new(
        secured_bus: SecuredBus) -> None:
    old = sec(secured_bus, "provider-bank-b")
    assert await access.diagnose_connect(secured_bus.bootstrap, old) is None
    credentials.rotate(secured_bus.bootstrap, "provider-bank-b")
    new = sec(secured_bus, "provider-bank-b")
    assert new.password != old.password
    refused = await access.diagnose_connect(secured_bus.bootstrap, old)
    assert isinstance(refused, BusAuthenticationError)
    assert refused.principal == principal("provider-bank-b")
    assert await access.diagnose_connect(secured_bus.bootstrap, new) is None
    await read_all(secured_bus.bootstrap, new, provider_requests_topic("bank-b"))


def test_faust_gets_sasl_ssl_through_its_own_aiokafka_mapping(secured_bus: SecuredBus) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    creds = faust_settings("platform", secured_bus.bootstrap)["broker_credentials"]
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == f"{NAMESPACE}-platform"
    assert auth["ssl_context"].verify_mode.name == "CERT_REQUIRED"


def test_setup_of_a_new_bank_makes_its_principal_and_acls(
        secured_bus: SecuredBus, capsys: pytest.CaptureFixture[str]) -> None:
    """`cardbus setup --providers bank-c` on a running secured cluster: bank-c gets a password
    in its vault and its ACLs; it reads its own request topic and no other bank's. (On the
    session's own secured broker the running system may have set bank-c up already: then this
    shows that setting it up again keeps it working.)"""
    assert main(["setup", "--providers", "bank-c"]) == 0
    assert "bus identities:" in capsys.readouterr().out
    assert vault.has_secret("provider-bank-c", secret_name("provider-bank-c"))
    assert main(["topics", "create", "--providers", "bank-c"]) == 0  # as the operator
    capsys.readouterr()
    bank_c = provider_requests_topic("bank-c")
    assert main(["credentials", "check", "provider-bank-c", "--read", bank_c]) == 0
    assert main(["credentials", "check", "provider-bank-c", "--read", BANK_A_REQUESTS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cardbus: error: bus: {principal('provider-bank-c')} may not READ topic "
                   f"{BANK_A_REQUESTS}: {access.HINT}"]


async def test_the_auditor_writes_its_findings_topic(secured_bus: SecuredBus) -> None:
    """``cardbus audit --follow`` publishes as the auditor: its one write grant works (the
    refusals above show it writes nothing else)."""
    from schemas.audit import AuditFindingReported
    from schemas.samples import sample_raw
    from streams import codec
    from streams.topics import AUDIT_FINDINGS

    finding = codec.encode(AuditFindingReported.model_validate(
        {**sample_raw("AuditFindingReported", sealed=False), "event_id": uuid.uuid4().hex}))
    auditor = sec(secured_bus, "auditor")
    await produce(secured_bus.bootstrap, auditor, AUDIT_FINDINGS.name, finding)
    assert finding in await read_all(secured_bus.bootstrap, auditor, AUDIT_FINDINGS.name,
                                     until=finding)
