"""pytest plugin for `make mutation` only (``-p tests.mutmut_compat``): mutmut 3.4 (the last
release that accepts faust's click<8.4) reads ``item._nodeid``, which pytest 9 no longer has."""

from __future__ import annotations

import pytest

if not hasattr(pytest.Item, "_nodeid"):
    pytest.Item._nodeid = property(lambda self: self.nodeid)  # type: ignore[attr-defined]
