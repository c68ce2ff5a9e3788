"""Table records parsed once: the platform reads routes and terminal records on every payment,
and they change rarely."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class Parsed(Generic[M]):
    """Parsed models of a table's JSON records, parsed again only when a record changes (every
    payment reads the routes and its terminal; their records change rarely)."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._cache: dict[str, tuple[Any, M]] = {}

    def get(self, key: str, raw: Any) -> M | None:
        if not raw:
            self._cache.pop(key, None)
            return None
        hit = self._cache.get(key)
        if hit is not None and (hit[0] is raw or hit[0] == raw):
            return hit[1]
        parsed = self.model.model_validate(raw)
        self._cache[key] = (raw, parsed)
        return parsed
