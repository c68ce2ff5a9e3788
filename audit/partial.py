"""Partition-parallel audit: which process audits what, its part of the work, and merging.

The payment topics (taps, payment requests, provider requests and results, terminal results,
transit loads) share their partition count, and a provider's request partition and its result
partition share the card's key: the per-record checks (decode, hygiene, seals, key times) and
the re-derivation of a provider partition need nothing outside their partition. A process given
``--partitions`` audits those partitions of every payment topic; the other topics (registrations,
keys, settlements, dead letters) belong to the process that has partition 0, and every process
reads the identity topics to learn the keys. Each writes its ``Partial``; ``audit.engine.finish``
merges the parts and runs the cross-partition checks (duplicates, completeness, chains,
settlements, re-derived outputs against the recorded ones) once: two parts merged give the
findings of one full audit.

A part file is the auditor's own work product (Python pickle, with a format tag): load only
files your own audit processes wrote.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from audit.model import Fact, Finding, Record
from audit.rederive import PartitionReplay
from audit.scan import provider_of
from cardbus.errors import ConfigError
from streams.topics import PAYMENT_PARTITIONS

PAYMENT_TOPICS = frozenset({"taps", "payment-requests", "provider-results", "terminal-results",
                            "transit-loads"})
IDENTITY_TOPICS = ("providers", "terminals", "key-history")
"""Topics every process reads whole: the identity keys and their history."""
CONTEXT_TOPICS = ("provider-admissions", "provider-keys", "terminal-results")
"""Topics every process reads whole for the platform re-derivation (``audit.platform``): the
routes' admissions and keys, and the answers to terminals (keyed by terminal, so a payment's
answer may lie on any partition); audited (scanned) only by their owner."""
KEPT_TOPICS = frozenset({"provider-results", "settlements", *IDENTITY_TOPICS})
"""Records a part carries whole: the recorded outputs the merge compares with the re-derived
ones (and verifies when they differ), and the keys to verify them with."""
FORMAT = "cardbus-audit-part/1"


def is_payment_topic(topic: str) -> bool:
    """Whether ``topic`` (name without namespace) is split by ``--partitions``."""
    return topic in PAYMENT_TOPICS or provider_of(topic) is not None


def owns(partitions: frozenset[int] | None, topic: str, partition: int) -> bool:
    """Whether the process auditing ``partitions`` (None: all) audits this topic partition."""
    if partitions is None:
        return True
    return partition in partitions if is_payment_topic(topic) else 0 in partitions


def parse_partitions(text: str, total: int = PAYMENT_PARTITIONS) -> frozenset[int]:
    """``0-2,5`` -> {0, 1, 2, 5} (each below ``total``, the payment topics' partition count)."""
    out: set[int] = set()
    try:
        for piece in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = piece.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--partitions {text!r}: expected numbers and ranges like 0-2,5"
                          ) from None
    if not out or max(out) >= total or min(out) < 0:
        raise ConfigError(f"--partitions {text!r}: the payment topics have partitions "
                          f"0-{total - 1}")
    return frozenset(out)


@dataclass
class Partial:
    """One process's part of an audit (see the module docstring)."""

    namespace: str
    partitions: frozenset[int] | None
    time_partial: bool = False  # the range started after the beginning (--from)
    end_ms: int | None = None
    events_read: int = 0
    # the platform re-derivation: the payments it re-derived, and the recorded platform
    # outputs this part owns whose payment it did not (an orphan unless another part has it)
    platform_payments: set[str] = field(default_factory=set)
    platform_orphans: list[tuple[str, Finding]] = field(default_factory=list)
    per_topic: Counter[str] = field(default_factory=Counter)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    not_checked: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    replays: list[PartitionReplay] = field(default_factory=list)
    kept: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    first_in_range: dict[tuple[str, int], int] = field(default_factory=dict)


class InRange:
    """Provider request records inside the audited range: from each partition's first
    in-range offset on (the reader stops every partition at the end of the range)."""

    def __init__(self, first: dict[tuple[str, int], int]) -> None:
        self.first = first

    def __contains__(self, where: object) -> bool:
        if not isinstance(where, tuple) or len(where) != 3:
            return False
        topic, partition, offset = where
        return bool(offset >= self.first.get((topic, partition), 1 << 62))


def check_cover(parts: Iterable[Partial], total: int = PAYMENT_PARTITIONS) -> None:
    """The parts are of one namespace and cover every partition exactly once."""
    parts = list(parts)
    if not parts:
        raise ConfigError("nothing to merge: no audit part given")
    if len({p.namespace for p in parts}) > 1:
        raise ConfigError("audit parts of different namespaces: "
                          f"{', '.join(sorted({p.namespace for p in parts}))}")
    if any(p.partitions is None for p in parts):
        if len(parts) > 1:
            raise ConfigError("a full audit cannot be merged with other parts")
        return
    seen: Counter[int] = Counter(n for p in parts for n in p.partitions or ())
    twice = sorted(n for n, c in seen.items() if c > 1)
    missing = sorted(set(range(total)) - set(seen))
    if twice or missing:
        raise ConfigError(f"audit parts must cover partitions 0-{total - 1} once each: "
                          + (f"missing {missing} " if missing else "")
                          + (f"audited twice {twice}" if twice else ""))


def save(part: Partial, path: Path) -> None:
    """Write ``part`` for ``cardbus audit --merge``."""
    path.write_bytes(pickle.dumps((FORMAT, part), protocol=pickle.HIGHEST_PROTOCOL))


def load(path: Path) -> Partial:
    """Read a part this auditor's own process wrote (see the module docstring)."""
    try:
        tag, part = pickle.loads(path.read_bytes())  # noqa: S301 - the auditor's own file
    except (OSError, pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: not an audit part ({exc})") from None
    if tag != FORMAT or not isinstance(part, Partial):
        raise ConfigError(f"{path}: not an audit part of format {FORMAT}")
    return part


__all__ = ["FORMAT", "IDENTITY_TOPICS", "KEPT_TOPICS", "InRange", "Partial", "check_cover",
           "is_payment_topic", "load", "owns", "parse_partitions", "save"]
