"""Upcasters: an old version of an event (raw dict) in, the current version (raw dict) out.

An upcaster is registered for one ``(type, from_version)`` and returns the dict of version
``from_version + 1``; ``upcast`` chains them until the current version. Upcasters run on the raw
decoded JSON before validation, so the current model never has to know old shapes. They live
next to the model they upgrade (see ``schemas.payments``).

Note for verifiers: a seal covers the canonical bytes of the version it was made on. To verify
an upcast event, verify over ``schemas.base``'s canonical form of the *original* dict (the codec
keeps it: ``streams.codec.decode_raw``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Raw = dict[str, Any]


class UpcastError(ValueError):
    """An event version this code cannot bring up to date (the codec makes it a
    ``DecodeError``: schemas sit below the core and import nothing of it)."""

    def __init__(self, message: str, *, field: str = "schema_version") -> None:
        super().__init__(message)
        self.field = field
Upcaster = Callable[[Raw], Raw]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the step ``type_name`` v``from_version`` -> v``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (type_name, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"upcaster for {type_name} v{from_version} registered twice")
        _UPCASTERS[key] = fn
        return fn

    return register


def upcast(raw: Raw, current: int) -> Raw:
    """Bring ``raw`` (with ``type`` and integer ``schema_version``) up to ``current``."""
    type_name = raw["type"]
    version = raw["schema_version"]
    if version > current:
        raise UpcastError(
            f"schema_version: {type_name} v{version} is newer than this code knows (v{current})",
            field="schema_version",
        )
    while version < current:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise UpcastError(
                f"schema_version: {type_name} v{version} is not supported "
                f"(current v{current}, no upcaster from v{version})",
                field="schema_version",
            )
        raw = step(dict(raw))
        new_version = raw.get("schema_version")
        if new_version != version + 1:  # a broken upcaster is a bug, not bad input
            raise AssertionError(f"upcaster {type_name} v{version} produced v{new_version}")
        version = new_version
    return raw


def registered() -> list[tuple[str, int]]:
    """Every registered ``(type, from_version)`` step."""
    return sorted(_UPCASTERS)
