"""The agent's memory jobs against a real store process and a real engine process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from appliance.agent.service import AgentService
from appliance.config import ApplianceConfig
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH
from appliance.protocol.store import (
    STORE_ARCHIVE_FIND,
    STORE_AUDIT_VERIFY,
    STORE_REMEMBER,
    STORE_STATS,
    ArchiveQuery,
    MemoryIn,
)
from appliance.store.db import MemoryDB

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


async def test_a_new_embedding_model_reembeds_the_memory_through_the_backfill(
        config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    """The memory file was made with another model (another GGUF here); the store drops those vectors
    at open, says so in its health, and the agent's backfill re-embeds every memory through the engine."""
    rng = np.random.default_rng(3)
    old = MemoryDB(config.memory_dir / "memory.db", config.memory, config.memory_key_path,
                   vector_model="gguf:an-older-model.gguf")
    for i in range(70):
        vector = rng.standard_normal(config.memory.vector_dim)
        old.longterm.remember(MemoryIn(text=f"remembered under the old model {i}",
                                       embedding=(vector / np.linalg.norm(vector)).tolist()))
    old.close()
    peers = await services("store", "engine")
    assert (await peers.store.call(STORE_STATS)).vectors == 0
    assert "re-embedding for gguf:embedding.gguf: 0 of 70 memories" in (await peers.store.call(HEALTH)).detail
    agent = AgentService(config)
    try:
        await agent.backfill()
        assert (await peers.store.call(STORE_STATS)).vectors == 70
        assert "re-embedding" not in (await peers.store.call(HEALTH)).detail
    finally:
        await agent.stop()
        await agent.peers.close()
