"""Create or verify the catalogue's topics on a broker: idempotent, and loud about drift.

A topic that exists with other partitions, replication or config than the catalogue asks for
is *reported* (``drift``), never silently accepted and never changed behind the operator's
back: partitions cannot shrink, and a retention change on an audit topic is a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from cardbus.errors import BrokerError
from streams import clients
from streams.topics import TopicSettings, TopicSpec

_UNKNOWN_TOPIC = 3
_LEADER_NOT_AVAILABLE = 5
_TOPIC_EXISTS = 36
_NOT_YET = (_UNKNOWN_TOPIC, _LEADER_NOT_AVAILABLE)  # a topic just made: metadata still spreading
_SETTLE_TRIES, _SETTLE_DELAY_S = 50, 0.1

Status = Literal["created", "ok", "drift"]


@dataclass(frozen=True)
class TopicState:
    """What ``ensure_topics`` found or did for one topic."""

    name: str
    status: Status
    problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = "; ".join(self.problems)
        return f"{self.status:<8} {self.name}" + (f"  ({detail})" if detail else "")


@dataclass(frozen=True)
class EnsureReport:
    """The outcome for every topic asked for."""

    topics: tuple[TopicState, ...]

    @property
    def drift(self) -> tuple[TopicState, ...]:
        return tuple(t for t in self.topics if t.status == "drift")

    @property
    def created(self) -> tuple[TopicState, ...]:
        return tuple(t for t in self.topics if t.status == "created")

    @property
    def ok(self) -> bool:
        """True when no topic drifted from the catalogue."""
        return not self.drift


def with_prefix(specs: Iterable[TopicSpec], prefix: str | None) -> list[TopicSpec]:
    """``specs`` renamed ``<prefix>.<name>`` (isolated test runs, several tenants on one
    cluster); unchanged when ``prefix`` is empty."""
    if not prefix:
        return list(specs)
    return [replace(s, name=f"{prefix}.{s.name}") for s in specs]


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec],
                        settings: TopicSettings | None = None, *,
                        timeout_ms: int = 30_000,
                        overrides: Mapping[str, int | None] | None = None) -> EnsureReport:
    """Create the missing topics of ``specs`` and compare the existing ones with the catalogue.
    Without ``settings``: replication and ``min.insync.replicas`` follow the cluster's size
    (``TopicSettings.from_env``), ``overrides`` (not None) win."""
    admin = clients.admin(bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        await _close_quietly(admin)
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap} ({exc}); start one with `cardbus broker start` "
            "or pass --bootstrap HOST:PORT"
        ) from None
    try:
        if settings is None:
            settings = TopicSettings.from_env(await _cluster_size(admin), overrides)
        return await _ensure(admin, specs, settings, timeout_ms)
    except KafkaError as exc:
        raise BrokerError(f"Kafka at {bootstrap} refused a topic request: {exc}") from None
    finally:
        await _close_quietly(admin)


def ensure_topics_sync(bootstrap: str, specs: Sequence[TopicSpec],
                       settings: TopicSettings | None = None,
                       overrides: Mapping[str, int | None] | None = None) -> EnsureReport:
    """``ensure_topics`` for callers without an event loop (the CLI)."""
    return asyncio.run(ensure_topics(bootstrap, specs, settings, overrides=overrides))


async def _cluster_size(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster has."""
    info = await admin.describe_cluster()
    return max(1, len(info.get("brokers", [])))


async def cluster_size(bootstrap: str) -> int:
    """How many brokers the cluster at ``bootstrap`` has (topic replication follows it)."""
    admin = clients.admin(bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        return await _cluster_size(admin)
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({exc})") from None
    finally:
        await _close_quietly(admin)


async def _ensure(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec],
                  settings: TopicSettings, timeout_ms: int) -> EnsureReport:
    by_name = {s.name: s for s in specs}
    # list first: a metadata request naming a missing topic would auto-create it on brokers
    # with auto.create.topics.enable (the default), with the wrong partitions and config
    present = set(await admin.list_topics())
    missing = [n for n in by_name if n not in present]
    existing = [n for n in by_name if n in present]
    described = await _describe(admin, existing)

    states: dict[str, TopicState] = {}
    if missing:
        new = [NewTopic(n, by_name[n].partitions, settings.replication_factor,
                        topic_configs=by_name[n].config(settings)) for n in missing]
        response = (await admin.create_topics(new, timeout_ms=timeout_ms)).to_object()
        for err in response["topic_errors"]:
            if err["error_code"] == 0:
                states[err["topic"]] = TopicState(err["topic"], "created")
            elif err["error_code"] == _TOPIC_EXISTS:  # made by someone else meanwhile
                existing.append(err["topic"])
                described.update(await _describe(admin, [err["topic"]]))
            else:
                raise BrokerError(f"creating topic {err['topic']} failed: "
                                  f"{err.get('error_message') or err['error_code']}")
    if existing:
        configs = await _configs(admin, existing)
        for name in existing:
            problems = _compare(by_name[name], settings, described[name], configs.get(name, {}))
            states[name] = TopicState(name, "drift" if problems else "ok", tuple(problems))
    return EnsureReport(tuple(states[n] for n in by_name))


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, Any]]:
    """Partition metadata of ``names`` (listed as existing), waiting while a freshly created
    topic's metadata is still spreading to the broker we ask."""
    out: dict[str, dict[str, Any]] = {}
    pending = list(names)
    for _ in range(_SETTLE_TRIES):
        if not pending:
            break
        for t in await admin.describe_topics(pending):
            if t["error_code"] == 0 and t["partitions"]:
                out[t["topic"]] = t
            elif t["error_code"] not in (0, *_NOT_YET):
                raise BrokerError(f"describing topic {t['topic']} failed with Kafka error "
                                  f"code {t['error_code']}")
        pending = [n for n in pending if n not in out]
        if pending:
            await asyncio.sleep(_SETTLE_DELAY_S)
    if pending:
        raise BrokerError(f"topics listed but not describable: {', '.join(pending)}")
    return out


async def _configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    pending = list(names)
    for _ in range(_SETTLE_TRIES):
        if not pending:
            break
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, None) for n in pending]
        for response in await admin.describe_configs(resources):
            for res in response.to_object()["resources"]:
                code = res["error_code"]
                if code == 0:
                    out[res["resource_name"]] = {e["config_names"]: e["config_value"]
                                                 for e in res["config_entries"]}
                elif code not in _NOT_YET:
                    raise BrokerError(f"describing config of {res['resource_name']} failed: "
                                      f"{res['error_message'] or code}")
        pending = [n for n in pending if n not in out]
        if pending:
            await asyncio.sleep(_SETTLE_DELAY_S)
    if pending:
        raise BrokerError(f"config of topics not describable: {', '.join(pending)}")
    return out


def _compare(spec: TopicSpec, settings: TopicSettings, described: dict[str, Any],
             config: dict[str, str]) -> list[str]:
    problems = []
    partitions = described.get("partitions", [])
    if len(partitions) != spec.partitions:
        problems.append(f"partitions: broker has {len(partitions)}, catalogue wants "
                        f"{spec.partitions}")
    replication = {len(p["replicas"]) for p in partitions}
    if partitions and replication != {settings.replication_factor}:
        problems.append(f"replication: broker has {sorted(replication)}, catalogue wants "
                        f"{settings.replication_factor}")
    for key, wanted in spec.config(settings).items():
        have = config.get(key)
        if have != wanted:
            problems.append(f"{key}: broker has {have}, catalogue wants {wanted}")
    return problems


async def _close_quietly(admin: AIOKafkaAdminClient) -> None:
    with contextlib.suppress(Exception):  # closing a client that never fully started
        await admin.close()
