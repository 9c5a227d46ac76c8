"""The agent's memory jobs against a real store process and a real engine process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.agent.service import AgentService
from appliance.config import load_config
from appliance.ipc.client import IpcClient
from appliance.protocol.store import STORE_ARCHIVE_FIND, STORE_REMEMBER, STORE_STATS, ArchiveQuery, MemoryIn
from tests.conftest import serve
from tests.store.test_service import wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def store_and_engine(config_file: Path) -> Iterator[None]:
    processes = [serve(config_file, "store"), serve(config_file, "engine")]
    yield
    for process in processes:
        process.terminate()
        process.wait(10)


async def test_backfill_and_archive_jobs(config_file: Path, store_and_engine: None) -> None:
    config = load_config(config_file)
    store = IpcClient("store", config.socket_path("store"))
    engine = IpcClient("engine", config.socket_path("engine"))
    await wait_ready(store)
    await wait_ready(engine)
    for i in range(70):  # more than one backfill batch
        await store.call(STORE_REMEMBER, MemoryIn(text=f"stored while the engine was down {i}"))
    await store.call(STORE_REMEMBER, MemoryIn(text="ancient", created_at=time.time() - 400 * 86_400))
    agent = AgentService(config)
    try:
        await agent.backfill()
        assert (await store.call(STORE_STATS)).vectors == 71
        await agent.archive()
        found = await store.call(STORE_ARCHIVE_FIND, ArchiveQuery())
        assert [r.text for r in found.records] == ["ancient"]
    finally:
        await agent.stop()
        for client in (store, engine, *agent._peers.values()):
            await client.close()
