"""SIGKILL the store process at random points of a write burst, 100 times.

After every kill the file must pass PRAGMA integrity_check, and every write the store
acknowledged before the kill (memories, documents, ring entries, audit rows) must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.protocol.store import (
    STORE_AUDIT_APPEND,
    STORE_INGEST,
    STORE_REMEMBER,
    STORE_RING_APPEND,
    AuditIn,
    DocumentIn,
    MemoryIn,
    RingEntryIn,
)
from appliance.store.db import MemoryDB
from tests.helpers import serve, vec, wait_ready

pytestmark = pytest.mark.slow
KILLS = 100


async def burst(client: IpcClient, round_no: int, acked: dict[str, set[str]]) -> None:
    async def one(i: int) -> None:
        tag = f"r{round_no}-{i}"
        kind = i % 4
        if kind == 0:
            await client.call(STORE_REMEMBER, MemoryIn(text=tag, embedding=vec(i), tags=["crash"]))
            acked["memory"].add(tag)
        elif kind == 1:
            await client.call(STORE_RING_APPEND, RingEntryIn(conversation="crash", text=tag))
            acked["ring"].add(tag)
        elif kind == 2:
            await client.call(STORE_AUDIT_APPEND, AuditIn(user_id="crash", action=tag))
            acked["audit"].add(tag)
        else:
            await client.call(STORE_INGEST, DocumentIn(path=f"/doc/{tag}", chunks=[tag, tag + "-b"],
                                                       embeddings=[vec(i), vec(i + 1)]))
            acked["memory"].add(tag)

    i = 0
    while True:  # until the kill: four writes in flight at a time
        await asyncio.gather(*(one(i + j) for j in range(4)))
        i += 4


async def test_sigkill_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    from tests.helpers import write_config

    config_file = write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "memory": {"vector_dim": 8, "ring_size": 100_000},
    })
    config = load_config(config_file)
    acked: dict[str, set[str]] = {"memory": set(), "ring": set(), "audit": set()}
    rng = random.Random(2026)
    for round_no in range(KILLS):
        process = serve(config_file, "store")
        client = IpcClient("store", config.socket_path("store"), 10.0)
        try:
            await wait_ready(client)
            task = asyncio.create_task(burst(client, round_no, acked))
            await asyncio.sleep(rng.uniform(0.0, 0.25))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            with contextlib.suppress(IpcError):
                await task
        finally:
            await client.close()
            if process.poll() is None:
                process.kill()
    db = MemoryDB(config.memory_dir / "memory.db", config.memory, config.memory_key_path)
    try:
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        texts = {r[0] for r in db.conn.execute("SELECT text FROM memories")}
        assert acked["memory"] <= texts, sorted(acked["memory"] - texts)[:5]
        ring = {e.text for e in db.ring.read("crash", 1_000_000)}
        assert acked["ring"] <= ring, sorted(acked["ring"] - ring)[:5]
        actions = {r[0] for r in db.conn.execute("SELECT action FROM audit")}
        assert acked["audit"] <= actions, sorted(acked["audit"] - actions)[:5]
        assert db.audit.verify().ok
        assert db.longterm.index.live == db.conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
        assert sum(len(v) for v in acked.values()) > 10 * KILLS  # the kills really landed mid-burst
        print(f"{KILLS} kills; acknowledged and found: " + ", ".join(f"{k} {len(v)}" for k, v in acked.items()))
    finally:
        db.close()
