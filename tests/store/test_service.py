"""The store process over its real Unix socket: every endpoint, backup while writing, restore."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig, load_config
from appliance.ipc import BadRequest, IpcTimeout, NotFound
from appliance.ipc.client import IpcClient
from appliance.protocol.common import HEALTH
from appliance.protocol.store import (
    STORE_ARCHIVE,
    STORE_ARCHIVE_FIND,
    STORE_AUDIT_APPEND,
    STORE_AUDIT_VERIFY,
    STORE_BACKUP,
    STORE_FORGET,
    STORE_GET,
    STORE_INGEST,
    STORE_RECALL,
    STORE_REMEMBER,
    STORE_RESTORE,
    STORE_RING_APPEND,
    STORE_RING_READ,
    STORE_ROTATE_KEY,
    STORE_STATS,
    ArchiveQuery,
    ArchiveRequest,
    AuditIn,
    BackupRequest,
    DocumentIn,
    MemoryId,
    MemoryIn,
    RecallRequest,
    RestoreRequest,
    RingEntryIn,
    RingRead,
)
from appliance.store.offline import OfflineError, restore_backup
from appliance.store.schema import SCHEMA_VERSION
from appliance.store.service import StoreService
from tests.helpers import eventually_async, serve, vec, wait_ready, write_config
from tests.store.conftest import file_at_version_9

pytestmark = pytest.mark.slow


@pytest.fixture
def store_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "memory": {"vector_dim": 8},
    })


@pytest.fixture
def store_process(store_config: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = serve(store_config, "store")
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture
async def store(store_config: Path, store_process: subprocess.Popen[bytes]) -> AsyncIterator[IpcClient]:
    client = IpcClient("store", load_config(store_config).socket_path("store"), 10.0)
    await wait_ready(client)
    yield client
    await client.close()


async def test_every_endpoint_over_the_socket(store: IpcClient, tmp_path: Path) -> None:
    first = await store.call(STORE_REMEMBER, MemoryIn(text="freezer 2 is at -18C", embedding=vec(1),
                                                      created_at=time.time() - 60 * 86_400))
    second = await store.call(STORE_REMEMBER, MemoryIn(text="freezer 3 door left open", embedding=vec(2)))
    assert (await store.call(STORE_GET, first)).text == "freezer 2 is at -18C"
    recall = await store.call(STORE_RECALL, RecallRequest(query="freezer door", embedding=vec(2), k=2))
    assert recall.hits[0].record.id == second.id and recall.took_ms >= 0
    entry = await store.call(STORE_RING_APPEND, RingEntryIn(conversation="phone-1", text="hi"))
    assert (await store.call(STORE_RING_READ, RingRead(conversation="phone-1"))).entries == [entry]
    doc = await store.call(STORE_INGEST, DocumentIn(path="/m.md", chunks=["a", "b"], embeddings=[vec(3), vec(4)]))
    assert doc.chunks == 2
    progress = [p async for p in store.stream(STORE_ARCHIVE, ArchiveRequest())]
    assert progress[-1].finished and progress[-1].done == 1
    found = await store.call(STORE_ARCHIVE_FIND, ArchiveQuery())
    assert [r.id for r in found.records] == [first.id]
    assert (await store.call(STORE_RESTORE, RestoreRequest(ids=[first.id]))).restored == 1
    row = await store.call(STORE_AUDIT_APPEND, AuditIn(user_id="admin", action="test", details={"k": 1}))
    assert row.id == 1 and (await store.call(STORE_AUDIT_VERIFY)).ok
    assert (await store.call(STORE_ROTATE_KEY)).reencrypted >= 1
    assert (await store.call(STORE_FORGET, second)).forgotten
    with pytest.raises(NotFound, match=f"no memory with id {second.id}"):
        await store.call(STORE_GET, second)
    with pytest.raises(BadRequest, match="expects 8"):
        await store.call(STORE_REMEMBER, MemoryIn(text="x", embedding=[1.0, 2.0]))
    with pytest.raises(BadRequest, match="must be absolute"):
        await store.call(STORE_BACKUP, BackupRequest(path="relative.db"))
    stats = await store.call(STORE_STATS)
    assert (stats.memories, stats.forgotten, stats.ring_entries, stats.audit_rows) == (3, 1, 1, 1)


async def test_backup_while_writing_then_restore(store: IpcClient, store_config: Path,
                                                 store_process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    for i in range(300):
        await store.call(STORE_REMEMBER, MemoryIn(text=f"reading {i}", embedding=vec(i)))

    async def writer() -> int:
        count = 0
        for i in range(100):
            await store.call(STORE_REMEMBER, MemoryIn(text=f"during backup {i}", embedding=vec(i)))
            count += 1
        return count

    target = tmp_path / "backup.db"
    written, done = await asyncio.gather(writer(), store.call(STORE_BACKUP, BackupRequest(path=str(target))))
    assert done.bytes > 0 and target.exists()
    config: ApplianceConfig = load_config(store_config)
    with pytest.raises(OfflineError, match="the store is running"):
        await asyncio.to_thread(restore_backup, config, target)
    await store.call(STORE_REMEMBER, MemoryIn(text="after the backup", embedding=vec(0)))
    store_process.terminate()
    store_process.wait(10)
    summary = await asyncio.to_thread(restore_backup, config, target)
    assert f"schema {SCHEMA_VERSION}" in summary
    restarted = serve(store_config, "store")
    try:
        await store.close()
        await wait_ready(store)
        stats = await store.call(STORE_STATS)
        assert 300 <= stats.memories <= 300 + written
        hits = await store.call(STORE_RECALL, RecallRequest(query="after the backup", k=1, mode="text"))
        assert all(h.record.text != "after the backup" for h in hits.hits)
        assert (await store.call(STORE_GET, MemoryId(id=1))).text == "reading 0"
    finally:
        restarted.terminate()
        restarted.wait(10)


def test_restore_refuses_bad_files(tmp_path: Path, store_config: Path) -> None:
    config = load_config(store_config)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OfflineError, match=r"junk\.db"):
        restore_backup(config, junk)
    with pytest.raises(OfflineError, match="no such file"):
        restore_backup(config, tmp_path / "absent.db")


async def test_hostile_frames_get_clear_errors_and_write_nothing(store: IpcClient) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(store.socket_path))) as session:
        cases = [
            ("recall", b"{not json", "JSON"),
            ("recall", b'{"query": "x", "filters": {"colour": "red"}}', "filters.colour"),
            ("recall", b'{"query": "x", "filters": {"sources": ["\' OR 1=1 --"]}, "k": 100000}', "k"),
            ("remember", b'{"text": "x", "embedding": [1e999, 0, 0, 0, 0, 0, 0, 0]}', "embedding"),
            ("remember", b'{"text": "' + b"x" * 70_000 + b'"}', "text"),
            ("ring/append", b'{"conversation": "../../etc/passwd", "text": "x"}', "conversation"),
            ("backup", b'{"path": "../relative"}', "absolute"),
        ]
        for method, body, named in cases:
            async with session.post(f"http://store/v1/{method}", data=body,
                                    headers={"Content-Type": "application/json"}) as reply:
                payload = await reply.json()
                assert reply.status == 400, (method, body[:60], payload)
                assert named in payload["error"]["message"], (method, payload)
    stats = await store.call(STORE_STATS)
    assert (stats.memories, stats.ring_entries) == (0, 0)


async def test_an_upgraded_file_rebuilds_its_text_index_in_the_background(store_config: Path, tmp_path: Path) -> None:
    """A file from before schema 10 opens at once; its full-text index fills behind the service, which
    says how far it got and stays searchable (vectors at once, text as it is indexed)."""
    config = load_config(store_config)
    file_at_version_9(config.memory_dir / "memory.db", 20_000, dim=8)
    log = tmp_path / "store.log"
    process = serve(store_config, "store", log=log)
    client = IpcClient("store", config.socket_path("store"), 10.0)
    try:
        await wait_ready(client)
        vector = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        assert len((await client.call(STORE_RECALL, RecallRequest(embedding=vector, k=3, mode="vector"))).hits) == 3

        async def alarm_found() -> bool:
            hits = await client.call(STORE_RECALL, RecallRequest(query="冷库温度", k=1, mode="text"))
            return bool(hits.hits) and hits.hits[0].record.id == 4321

        await eventually_async(alarm_found, 60, "the Chinese alarm found by text once indexed")
        await eventually_async(lambda: _logged(log, "full-text index rebuilt: 20000 memories"), 60, "the rebuild's end")
        assert await _logged(log, "full-text index rebuilding: 0 of 20,000 memories")
        assert "rebuilding" not in (await client.call(HEALTH)).detail
    finally:
        await client.close()
        process.terminate()
        process.wait(10)


async def _logged(log: Path, words: str) -> bool:
    return words in await asyncio.to_thread(log.read_text)


async def test_requests_whose_callers_gave_up_are_skipped_so_a_backlog_drains(store_config: Path) -> None:
    """The store in this process on its real socket, its SQLite thread held busy past the callers'
    timeouts: the writes queued meanwhile are not done once it frees (their callers were told
    "timeout" and would retry), they are counted in health, and the next call is answered at once.
    Without the skip, a store that fell 10 s behind stayed behind (ipc/deadline.py)."""
    config = load_config(store_config)
    service = StoreService(config)
    await service._open_socket()
    await service.start()
    client = IpcClient("store", config.socket_path("store"), 10.0)
    gate = threading.Event()
    try:
        busy = service._sqlite.submit(gate.wait, 30)  # the one SQLite thread, as a long unit of work holds it
        late = [client.call(STORE_REMEMBER, MemoryIn(text=f"late write {i}"), timeout_s=0.3) for i in range(5)]
        outcomes = await asyncio.gather(*late, return_exceptions=True)
        assert all(isinstance(o, IpcTimeout) for o in outcomes), outcomes
        # The store counts each wait from when it read the request, a little after it was sent: hold the
        # thread one more timeout, so that every one of the five has passed on the store's clock too.
        await asyncio.sleep(0.3)
        gate.set()
        busy.result(5)
        await eventually_async(lambda: _true(service.skipped_late == 5), 10, "the five late writes skipped")
        assert (await client.call(STORE_STATS)).memories == 0  # none of them was done
        assert (await client.call(STORE_REMEMBER, MemoryIn(text="on time"), timeout_s=2.0)).id > 0
        assert "5 requests skipped" in (await client.call(HEALTH)).detail
    finally:
        gate.set()
        await client.close()
        await service._shutdown()


async def _true(value: bool) -> bool:
    return value
