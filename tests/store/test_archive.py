"""The archive tier: zstd segments with a trained dictionary, findable, restorable, checked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance.protocol.store import ArchiveQuery, MemoryIn, RecallRequest
from appliance.store.db import MemoryDB
from appliance.store.errors import StoreError
from tests.store.conftest import unit

DAY = 86_400.0


def _fill(db: MemoryDB, rng: np.random.Generator, count: int = 300) -> list[int]:
    now = time.time()
    ids = []
    for i in range(count):
        text = (f'{{"device": "sensor-{i % 7}", "temperature_c": {20 + i % 13}.{i % 10}, '
                f'"humidity": {40 + i % 17}, "status": "{"ok" if i % 9 else "alarm"}"}}')
        ids.append(db.longterm.remember(MemoryIn(
            text=text, source=f"sensor-{i % 7}", tags=["telemetry"], embedding=unit(rng),
            created_at=now - (40 + i / 10) * DAY, pinned=i == 0)))
    db.longterm.remember(MemoryIn(text="fresh", embedding=unit(rng)))
    return ids


def test_old_unpinned_memories_move_to_compressed_segments(db: MemoryDB, rng: np.random.Generator) -> None:
    ids = _fill(db, rng)
    steps = list(db.archive.steps(30 * DAY))
    last = steps[-1]
    assert last.finished and last.done == 299 and last.segments == 1
    stats = db.stats()
    assert (stats.memories, stats.archived, stats.segments) == (2, 299, 1)  # the pinned one and "fresh" stay
    assert db.longterm.index.live == 2
    assert db.conn.execute("SELECT dict_id FROM archive_segments").fetchone()[0] is not None
    text_only = db.conn.execute("SELECT raw_bytes FROM archive_segments").fetchone()[0] - 299 * 16 * 4
    assert text_only > 0 and last.stored_bytes < last.raw_bytes
    hits = db.recall(RecallRequest(query="sensor", k=10, mode="text")).hits
    assert {h.record.id for h in hits} <= {ids[0]}
    assert list(db.archive.steps(30 * DAY))[-1].done == 0  # nothing left to do


def test_archived_memories_are_found_by_time_and_source(db: MemoryDB, rng: np.random.Generator) -> None:
    _fill(db, rng)
    list(db.archive.steps(30 * DAY))
    found = db.archive.find(ArchiveQuery(source="sensor-3", limit=1000))
    assert found and all(r.source == "sensor-3" and r.archived for r in found)
    now = time.time()
    window = db.archive.find(ArchiveQuery(since=now - 45 * DAY, until=now - 44 * DAY, limit=1000))
    assert window and all(now - 45 * DAY <= r.created_at <= now - 44 * DAY for r in window)
    assert [r.created_at for r in window] == sorted(r.created_at for r in window)


def test_restore_brings_memories_back_pinned(db: MemoryDB, rng: np.random.Generator) -> None:
    ids = _fill(db, rng)
    list(db.archive.steps(30 * DAY))
    assert db.archive.restore([ids[5], ids[6]]) == 2
    record = db.longterm.get(ids[5])
    assert record is not None and record.pinned and record.embedding is not None and record.tags == ["telemetry"]
    hit = db.recall(RecallRequest(embedding=record.embedding, k=1, mode="vector")).hits[0]
    assert hit.record.id == ids[5]
    assert db.stats().archived == 297
    with pytest.raises(StoreError, match=rf"not archived: ids \[{ids[5]}\]"):
        db.archive.restore([ids[5]])


def test_a_damaged_segment_is_reported(db: MemoryDB, rng: np.random.Generator) -> None:
    ids = _fill(db, rng, 100)
    list(db.archive.steps(30 * DAY))
    sealed = bytearray(db.conn.execute("SELECT sealed FROM archive_segments").fetchone()[0])
    sealed[100] ^= 0xFF
    with db.conn:
        db.conn.execute("UPDATE archive_segments SET sealed = ?", (bytes(sealed),))
    with pytest.raises(StoreError, match="fails its sha256 checksum"):
        db.archive.restore([ids[1]])
    assert db.longterm.get(ids[1]) is None and db.stats().archived == 99  # nothing half-restored


def test_empty_store_archives_nothing(db: MemoryDB) -> None:
    steps = list(db.archive.steps(0))
    assert steps[-1].finished and steps[-1].done == 0


def test_dictionary_is_reused_between_runs(db: MemoryDB, rng: np.random.Generator) -> None:
    _fill(db, rng, 150)
    list(db.archive.steps(45 * DAY))
    list(db.archive.steps(30 * DAY))
    dicts = db.conn.execute("SELECT count(*) FROM zstd_dicts").fetchone()[0]
    segments = db.conn.execute("SELECT count(DISTINCT dict_id), count(*) FROM archive_segments").fetchone()
    assert dicts == 1 and segments == (1, 2)
