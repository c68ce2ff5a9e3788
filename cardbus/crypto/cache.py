"""Bounded caches for key material and key objects inside the crypto core.

A software "HSM" keeps clear keys in process memory to avoid decrypting a key record (or
deriving a card key) per operation. ``ExpiringCache`` bounds how long and how many: an entry
lives ``ttl`` seconds from when it was stored, and past ``max_entries`` the oldest goes first.
Entries are keyed by names and tokens (key id and version, PAN token), never by a clear PAN or
key bytes. The clock is an argument so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cardbus.errors import KeyUsageError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

KEY_TTL_S = 300.0
"""How long a clear key (or an object holding one) stays cached after it was opened."""


class ExpiringCache(Generic[K, V]):
    """At most ``max_entries`` values, each for ``ttl`` seconds after it was put."""

    def __init__(self, ttl: float = KEY_TTL_S, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("cache needs a positive lifetime and room for one entry")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key`` if it is there and not expired (an expired one is dropped)."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if self._clock() >= hit[0]:
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: K, value: V) -> V:
        """Store ``value`` for ``ttl`` seconds from now; the oldest goes past the bound."""
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def pop(self, key: K) -> None:
        """Forget ``key`` (a retired or revoked key)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


GCM_RANDOM_NONCE_LIMIT = 2**32
"""NIST SP 800-38D 8.3: with random 96-bit nonces, at most 2^32 encryptions under one key."""


class NonceBudget:
    """The encryptions one AES-GCM key with random nonces has left (``spend`` raises past
    ``limit``: rotate the key). Counted per process: a production HSM counts per key, across
    every process that uses it."""

    def __init__(self, key_name: str, limit: int = GCM_RANDOM_NONCE_LIMIT) -> None:
        self.key_name = key_name
        self.limit = limit
        self.used = 0

    def spend(self) -> None:
        if self.used >= self.limit:
            raise KeyUsageError(f"{self.key_name} has made {self.used} AES-GCM encryptions with "
                                f"random nonces, its limit: rotate it")
        self.used += 1
