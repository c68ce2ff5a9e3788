"""The bank-iso bridge as a Faust app: decode -> link -> seal -> send, nothing more.

Consumes ``cardbus.provider.<id>.requests`` with many actors (``concurrency``), so many
requests are in flight on the one ISO 8583 link; each actor waits for its own host answer.
Tables (changelog-backed, co-partitioned with the request topic): ``ledger`` (PAN token -> the
card's recent answers and what the reversal of each needs; the PAN only as the provider's
ciphertext) and ``chain`` (partition -> hash-chain head). At start it publishes its
registration and key blocks like every provider, and connects to the host (``CARDBUS_ISO_HOST``
or the running ``cardbus iso-host``). Run with ``cardbus worker provider bank-iso``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from agents.providers.announce import key_provisioning, registration
from agents.providers.app import ProviderConfig
from agents.providers.iso8583.adapter import IsoBridgeAdapter
from agents.providers.iso8583.bridge import Bridge
from agents.providers.iso8583.hsm import BridgeHsm
from agents.providers.iso8583.link import Link, LinkSettings
from agents.providers.issuer import HsmIssuer
from cardbus import vault
from cardbus.errors import ConfigError, DecodeError
from cardbus.logs import bind_correlation, get_logger
from cardbus.paths import state_dir
from cardbus.settings import settings
from schemas.ledger import CardIssued, SettlementCutoverRequested
from schemas.payments import AuthorizationRequested, ReversalRequested
from streams import codec
from streams.faust_support import Bus, consume, make_app
from streams.topics import (
    DEAD_LETTERS,
    KEY_HISTORY,
    PROVIDER_KEYS,
    PROVIDER_REGISTRATIONS,
    PROVIDER_RESULTS,
    PROVIDER_TABLES,
    provider_requests_spec,
)

log = get_logger("iso8583.app")
CONCURRENCY = 64  # requests in flight per worker


def host_address(home: Path | None = None) -> tuple[str, int]:
    """The host to talk to: ``$CARDBUS_ISO_HOST`` (HOST:PORT), else the running
    ``cardbus iso-host`` (its ``host.json``); a clear error if neither."""
    env = settings().iso_host
    if env:
        host, _, port = env.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"CARDBUS_ISO_HOST={env!r}: expected HOST:PORT")
        return host or "127.0.0.1", int(port)
    path = (home or state_dir()) / "iso-host" / "host.json"
    if path.exists():
        return "127.0.0.1", int(json.loads(path.read_text())["port"])
    raise ConfigError("no ISO 8583 host: start one with `cardbus iso-host start`, or set "
                      "CARDBUS_ISO_HOST=HOST:PORT")


def build(cfg: ProviderConfig) -> faust.App:
    """The bridge's Faust app."""
    adapter = cfg.adapter
    if not isinstance(adapter, IsoBridgeAdapter):
        raise ConfigError(f"{adapter.provider_id} is not an ISO 8583 bridge")
    pid = adapter.provider_id
    app = make_app(cfg.app_id, party=f"provider-{pid}", bootstrap=cfg.bootstrap,
                   datadir=cfg.datadir, guarantee=cfg.guarantee, settings=cfg.topics,
                   **cfg.extra)
    bus = Bus(app, f"provider:{pid}")
    spec = provider_requests_spec(pid)
    answers = app.Table("ledger", default=None, partitions=PROVIDER_TABLES["ledger"])
    chains = app.Table("partition", default=None, partitions=PROVIDER_TABLES["partition"])
    hsm = BridgeHsm(pid, vault.FileKeyStore(f"provider-{pid}", cfg.home))
    host, port = host_address(cfg.home)
    bad_frames: list[asyncio.Task[None]] = []

    def on_bad_frame(raw: bytes, reason: str) -> None:
        letter = bridge.dead_letter(raw, reason, link.stats.bad_frames)
        bad_frames.append(asyncio.ensure_future(bus.send(DEAD_LETTERS.name, pid, letter)))
        bad_frames[:] = [t for t in bad_frames if not t.done()]

    link = Link(LinkSettings(host=host, port=port, deadline=adapter.deadline_s),
                on_bad_frame=on_bad_frame)

    async def publish(key: str, event: Any) -> None:
        await bus.send(PROVIDER_RESULTS.name, key, event)

    bridge = Bridge(pid, hsm, HsmIssuer(hsm, vault.identity("platform", cfg.home)), link,
                    publish)

    async def on_message(message: Any) -> None:
        ev = codec.decode(spec.name, message.value)
        with bind_correlation(ev.correlation_id, provider=pid):
            if isinstance(ev, AuthorizationRequested):
                await bridge.authorize(ev, message.partition, answers, chains)
            elif isinstance(ev, ReversalRequested):
                await bridge.reverse(ev, answers)
            elif isinstance(ev, CardIssued | SettlementCutoverRequested):
                log.info("not for the bridge: the host keeps cards and batches", step=ev.type)
            else:
                raise DecodeError(f"type: {ev.type} is not handled by a bank", field="type")

    topic = app.topic(spec.name, key_serializer="raw", value_serializer="raw",
                      partitions=spec.partitions)

    async def requests(stream: Any) -> None:
        await consume(stream, bus, on_message)

    app.agent(topic, name=f"provider.{pid}.requests", concurrency=CONCURRENCY)(requests)

    @app.task
    async def announce() -> None:
        """Publish the registration and the key blocks; connect to the host."""
        now = datetime.now(UTC)
        registered = registration(adapter, hsm, now)
        await bus.send(KEY_HISTORY.name, pid, registered)  # first: kept in full for the audit
        await bus.send(PROVIDER_REGISTRATIONS.name, pid, registered)
        await bus.send(PROVIDER_KEYS.name, pid, key_provisioning(hsm, now))
        log.info("provider announced", provider=pid, host=f"{host}:{port}")
        await link.start(wait=None)

    del announce
    return app
