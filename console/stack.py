"""The whole local CardBus on one machine: broker, pcscd, keys, topics, workers, a terminal.

``LocalStack`` starts what is not running yet (and later stops only what it started), so the
demo and ``cardbus up`` can be run again and find their state: keys in ``.cardbus/parties``,
broker data in ``.cardbus/kafka``, worker tables in ``.cardbus/workers``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cardbus import vault
from cardbus.errors import BrokerError, CardBusError
from cardbus.paths import state_dir, sub_dir
from cardbus.processes import Worker, child_env
from cardbus.settings import settings

Say = Callable[[str], None]
DEMO_PROVIDERS = ("bank-a", "bank-b", "transit", "bank-iso")
ISO_BRIDGE = "bank-iso"  # its worker talks ISO 8583 to a bank host (jPOS): started first
TERMINAL_ID = "T-0001"


@dataclass
class LocalStack:
    """What the demo and ``cardbus up`` run, and what they must stop."""

    providers: tuple[str, ...] = DEMO_PROVIDERS
    readers: int = 4
    say: Say = print
    bootstrap: str = ""
    workers: dict[str, Worker] = field(default_factory=dict)
    _started_broker: bool = False
    _started_iso_host: bool = False
    _pcscd: object | None = None

    # -- services --------------------------------------------------------------------------------

    def start_broker(self) -> str:
        from streams import broker

        env = settings().kafka_bootstrap_servers
        if env:
            self.bootstrap = env
            self.say(f"broker: using {env} (KAFKA_BOOTSTRAP_SERVERS)")
            return env
        running = broker.status()
        if running is not None:
            self.bootstrap = running.bootstrap
            state = (f"degraded: {len(running.alive())} of {running.brokers} nodes"
                     if running.degraded else "already running")
            self.say(f"broker: {state} at {running.bootstrap}")
            return self.bootstrap
        port = settings().kafka_port
        if broker.port_open(port):
            port = broker.free_port_block(1, start=port + 1)
        t0 = time.monotonic()
        cluster, _ = broker.start(port=port, progress=self.say)  # TLS, SCRAM, ACLs
        self._started_broker = True
        self.bootstrap = cluster.bootstrap
        self.say(f"broker: started at {cluster.bootstrap} in {time.monotonic() - t0:.1f}s")
        return self.bootstrap

    def start_pcscd(self) -> None:
        from cardbus.readers import virtual_readers
        from reader_agent.pcscd import Pcscd, list_readers

        pcscd = Pcscd(readers=self.readers)
        if pcscd.pid() is not None or (
                {r.name for r in virtual_readers(self.readers)} <= set(list_readers())):
            self.say("pcscd: already running with the CardBus virtual readers")
            return
        if Pcscd.foreign_pid() is not None:
            raise CardBusError("a pcscd not started by CardBus is running: stop it "
                               "(`pkill pcscd`) so CardBus can run its own with virtual readers")
        pcscd.start()
        self._pcscd = pcscd
        self.say(f"pcscd: started with {self.readers} virtual readers")

    def bus_identities(self) -> None:
        """Each party's principal, password (sealed in its vault) and ACLs on a secured bus
        (the operator's credential comes with the cluster); nothing on a plaintext one."""
        from streams import credentials

        report = credentials.ensure_parties(self.bootstrap, list(self.providers))
        if report.secured:
            self.say(f"bus: {len(report.users)} principals, {report.acls} ACLs (TLS + SCRAM)")
        else:
            self.say("bus: plaintext (the broker runs --insecure)")

    def setup(self) -> None:
        from cardbus.ceremony import setup
        from streams.admin import ensure_topics
        from streams.topics import catalogue

        report = setup(None, list(self.providers))
        for item in report.created:
            self.say(f"keys: created {item}")
        import asyncio

        result = asyncio.run(ensure_topics(
            self.bootstrap, list(catalogue(self.providers, with_changelogs=True)),
            None))
        created = sum(1 for t in result.topics if t.status == "created")
        self.say(f"topics: {len(result.topics)} ready ({created} created)")
        if not result.ok:
            raise BrokerError("topics differ from the catalogue: see `cardbus topics create`")
        from console.commands.admit import admit

        asyncio.run(admit(self.bootstrap, list(self.providers)))
        self.say(f"providers admitted by the operator: {', '.join(self.providers)}")

    def start_iso_host(self) -> None:
        """The bank host behind the ISO 8583 bridge (after the keys: it takes the bridge's)."""
        if ISO_BRIDGE not in self.providers or settings().iso_host:
            return
        from console.commands import isohost

        port = settings().iso_port
        if isohost.status() is None and isohost.port_answers(port):
            port = isohost.free_port()
        state, started = isohost.start(port=port, progress=self.say)
        self._started_iso_host = started
        self.say(f"ISO 8583 bank host: {'started' if started else 'already running'} at "
                 f"{state.address}")

    # -- workers ---------------------------------------------------------------------------------

    def start_workers(self, *, platform_args: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
               "CARDBUS_HOME": str(state_dir()), "PYTHONUNBUFFERED": "1"}
        logs = sub_dir("logs")
        specs = [("platform", ["worker", "platform", *platform_args])]
        specs += [(p, ["worker", "provider", p]) for p in self.providers]
        for name, args in specs:
            log = logs / f"{name}.log"
            party = "platform" if name == "platform" else f"provider-{name}"
            own = child_env(env, keep=[vault.storage_key_env(party)])  # its own key only
            w = Worker(name, [*args, "--loglevel", "info"], own, log)
            w.log_start = log.stat().st_size if log.exists() else 0
            self.workers[name] = w.start()
        self.say(f"workers: {', '.join(self.workers)} started (logs in {logs})")

    def start_auditor(self) -> None:
        """The live audit (``cardbus audit --follow``) as the auditor, with the key stores an
        audit re-derives and checks MACs with; its status file is what ``cardbus up`` shows."""
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
               "CARDBUS_HOME": str(state_dir()), "PYTHONUNBUFFERED": "1"}
        parties = ["platform", *(f"provider-{p}" for p in self.providers)]
        own = child_env(env, keep=[vault.storage_key_env(p) for p in parties])
        log = sub_dir("logs") / "audit-follow.log"
        w = Worker("audit", ["audit", "--follow"], own, log)
        w.log_start = log.stat().st_size if log.exists() else 0
        self.workers["audit"] = w.start()
        self.say(f"audit: following the bus (findings in {log} and on the findings topic)")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every worker has joined its group and recovered its tables (Faust
        logs "Worker]: Ready" then)."""
        deadline = time.monotonic() + timeout
        pending = dict(self.workers)
        while pending and time.monotonic() < deadline:
            self.check_workers()
            for name, w in list(pending.items()):
                if w.log.exists() and "Worker]: Ready" in w.log.read_text(errors="replace")[
                        w.log_start:]:
                    del pending[name]
            time.sleep(0.3)
        if pending:
            raise CardBusError(f"worker(s) not ready in {timeout:.0f}s: {', '.join(pending)} "
                               f"(logs in {logs_dir()})")
        self.say("workers: ready")

    def check_workers(self) -> None:
        dead = [w for w in self.workers.values() if not w.alive]
        if dead:
            raise CardBusError("worker(s) exited: " + "; ".join(
                f"{w.name} (see {w.log})\n{w.tail(15)}" for w in dead))

    def start_all(self) -> None:
        """Everything, in order: broker, pcscd, keys and topics, workers (until ready)."""
        self.start_broker()
        self.start_pcscd()
        self.bus_identities()
        self.setup()
        self.start_iso_host()
        self.start_workers()
        self.wait_ready()

    # -- shutdown --------------------------------------------------------------------------------

    def stop(self) -> None:
        from cards import serve

        for reader in list(serve.inserted()):
            with contextlib.suppress(Exception):
                serve.remove(reader)
        for w in self.workers.values():
            w.stop()
        if self._started_iso_host:
            from console.commands import isohost

            isohost.stop()
            self.say("ISO 8583 bank host: stopped")
        if self._pcscd is not None:
            with contextlib.suppress(Exception):
                self._pcscd.stop()  # type: ignore[attr-defined]
            self.say("pcscd: stopped")
        if self._started_broker:
            from streams import broker

            broker.stop()
            self.say("broker: stopped")


def logs_dir() -> Path:
    return sub_dir("logs")
