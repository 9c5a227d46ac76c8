"""The agent's memory jobs against a real store process and a real engine process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from appliance.agent.service import AgentService
from appliance.config import ApplianceConfig
from appliance.ipc.peers import Peers
from appliance.protocol.store import (
    STORE_ARCHIVE_FIND,
    STORE_AUDIT_VERIFY,
    STORE_REMEMBER,
    STORE_STATS,
    ArchiveQuery,
    MemoryIn,
)

pytestmark = pytest.mark.slow


async def test_backfill_and_archive_jobs(config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store", "engine")
    store = peers.store
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
        # Both jobs went through the command table: audited as the agent's (a backfill that finds
        # nothing to embed leaves no row).
        await agent.backfill()
        assert (await store.call(STORE_AUDIT_VERIFY)).rows == 2
    finally:
        await agent.stop()
        await agent.peers.close()
