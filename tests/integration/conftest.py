"""One CardBus per test session: key setup, topics, platform and bank workers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cardbus import local
from reader_agent.session import TerminalSession
from streams.admin import ensure_topics_sync
from streams.topics import TopicSettings, catalogue
from tests.integration.system import System, Till, software_terminal

PROVIDERS = ["bank-a", "bank-b", "bank-c"]
pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="session")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    home = Path(tmp_path_factory.mktemp("cardbus-home"))
    env = {**os.environ, "CARDBUS_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "PYTHONUNBUFFERED": "1"}
    old_home = os.environ.get("CARDBUS_HOME")
    os.environ["CARDBUS_HOME"] = str(home)
    local.setup(home, PROVIDERS)
    report = ensure_topics_sync(kafka_bootstrap, list(catalogue(PROVIDERS)), TopicSettings())
    assert report is not None
    sys_ = System(kafka_bootstrap, home, env)
    sys_.worker("platform", "platform", "--timeout", "4")
    sys_.start_provider("bank-a")
    sys_.start_provider("bank-b")
    try:
        yield sys_
    finally:
        sys_.stop_all()
        if old_home is None:
            os.environ.pop("CARDBUS_HOME", None)
        else:
            os.environ["CARDBUS_HOME"] = old_home


@pytest.fixture
async def till(system: System, unique_name: str) -> AsyncIterator[Till]:
    """An enrolled software terminal (its own id), keys from the running platform."""
    terminal = software_terminal(f"T{abs(hash(unique_name)) % 10**8:08d}", system.home)
    session = TerminalSession(terminal, system.bootstrap)
    await session.start()
    try:
        await session.enroll(timeout=90, providers=2)
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
    """Poll ``check()`` (async) until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(every)
