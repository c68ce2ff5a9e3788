"""Software terminals on the session's CardBus (the ``system`` fixture is in tests/conftest.py,
shared with tests/reader)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from reader_agent.session import TerminalSession
from tests.integration.system import System, Till, enroll_active, software_terminal

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
async def till(system: System, unique_name: str) -> AsyncIterator[Till]:
    """An enrolled software terminal (its own id), keys from the running platform."""
    terminal = software_terminal(f"T{abs(hash(unique_name)) % 10**8:08d}", system.home)
    session = TerminalSession(terminal, system.bootstrap)
    await session.start()
    try:
        await enroll_active(session)
    except Exception:
        await session.stop()
        print(system.logs())
        raise
    try:
        yield Till(session)
    finally:
        await session.stop()


@pytest.fixture
def settle() -> float:
    return 1.0


async def eventually(check, timeout: float = 30.0, every: float = 0.3):  # type: ignore[no-untyped-def]
    """Poll ``check()`` (async) until it returns a truthy value, and return it; fail the test
    (naming the check) if none came within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            pytest.fail(f"{getattr(check, '__name__', 'check')} still {result!r} after "
                        f"{timeout:.0f}s")
        await asyncio.sleep(every)
