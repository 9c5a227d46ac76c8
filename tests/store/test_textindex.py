"""The full-text index rebuilt after schema 10: in batches, resumable, searchable throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.protocol.store import MemoryIn, RecallRequest
from appliance.store.db import MemoryDB
from tests.store.conftest import DIM, file_at_version_9, open_db

COUNT = 5000


def _text_hits(db: MemoryDB, query: str) -> list[int]:
    return [h.record.id for h in db.recall(RecallRequest(query=query, k=10, mode="text")).hits]


def test_the_index_is_rebuilt_in_batches_resumably_and_searchable_meanwhile(tmp_path: Path) -> None:
    folder = tmp_path / "memory"
    file_at_version_9(folder / "memory.db", COUNT)
    db = open_db(folder)
    rebuild = db.longterm.text_rebuild
    assert rebuild is not None and rebuild.total == COUNT and rebuild.until == COUNT
    assert "0 of 5,000 memories (0 %)" in str(rebuild.describe())
    vector = np.eye(DIM, dtype=np.float32)[2].tolist()
    assert len(db.recall(RecallRequest(embedding=vector, k=5, mode="vector")).hits) == 5  # vectors: at once
    new_id = db.longterm.remember(MemoryIn(text="冷库门没关", kind="fact"))
    assert _text_hits(db, "冷库") == [new_id]  # written after the migration: found at once
    assert db.index_text(batch=1000)  # one batch, then a crash: the cursor was committed with it
    db.longterm.forget(4999)  # forgotten before the rebuild reached it: never indexed
    db.close()

    db = open_db(folder)
    rebuild = db.longterm.text_rebuild
    assert rebuild is not None and rebuild.next_id == 1000 and rebuild.total == COUNT - 1000 - 1
    restored = db.longterm.remember(MemoryIn(text="冷库 restored with its own id", kind="fact"))
    assert restored > COUNT  # (the archive's restore keeps old ids: covered below)
    batches = 0
    while db.index_text(batch=1000):
        batches += 1
    assert batches == 3 and db.longterm.text_rebuild is None
    assert db.conn.execute("SELECT count(*) FROM meta WHERE key = 'fts_rebuild'").fetchone()[0] == 0
    assert sorted(_text_hits(db, "冷库")) == sorted([4321, new_id, restored])
    assert 17 in _text_hits(db, "meter 17")
    assert 4999 not in _text_hits(db, "4999")
    indexed = db.conn.execute("SELECT doc FROM memory_fts_terms WHERE term = 'meter'").fetchone()[0]
    assert indexed == COUNT - 2  # every live meter reading once (not 4321, not forgotten 4999), none twice
    db.close()


def test_a_memory_written_back_into_the_range_is_indexed_once(tmp_path: Path) -> None:
    """An archive restore writes a memory under its old id: the rebuild, not the write, indexes it
    (FTS5 would otherwise keep both texts' words under one rowid if they differed)."""
    folder = tmp_path / "memory"
    file_at_version_9(folder / "memory.db", COUNT)
    db = open_db(folder)
    with db.conn:
        db.conn.execute("DELETE FROM memories WHERE id = 4500")  # as if archived before the upgrade
    with db.longterm.transaction():
        db.longterm.insert(MemoryIn(text="电表 restored", kind="fact"), memory_id=4500)
    while db.index_text(batch=2000):
        pass
    assert db.conn.execute("SELECT doc FROM memory_fts_terms WHERE term = 'restored'").fetchone()[0] == 1
    db.close()
