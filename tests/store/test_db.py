"""The memory file as a whole: pragmas, stats, backup steps."""

from __future__ import annotations

from pathlib import Path

import apsw

from appliance.protocol.store import MemoryIn, RingEntryIn
from appliance.store.db import MemoryDB
from appliance.store.schema import SCHEMA_VERSION
from tests.store.conftest import open_db


def test_durability_settings(db: MemoryDB) -> None:
    pragma = {name: db.conn.execute(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "synchronous", "secure_delete", "journal_size_limit", "busy_timeout")}
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1,
                      "journal_size_limit": 64 << 20, "busy_timeout": 5000}


def test_stats_count_every_tier(db: MemoryDB) -> None:
    db.longterm.remember(MemoryIn(text="a"))
    db.ring.append(RingEntryIn(conversation="c", text="b"))
    stats = db.stats()
    assert (stats.memories, stats.vectors, stats.ring_entries, stats.schema_version) == (1, 0, 1, SCHEMA_VERSION)
    assert stats.file_bytes > 0


def test_backup_is_a_consistent_copy(db: MemoryDB, tmp_path: Path) -> None:
    for i in range(50):
        db.longterm.remember(MemoryIn(text=f"m{i}"))
    done = db.backup(tmp_path / "copy.db")
    assert done.bytes == (tmp_path / "copy.db").stat().st_size and done.pages == db.page_count()
    copy = apsw.Connection(str(tmp_path / "copy.db"))
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT count(*) FROM memories").fetchone()[0] == 50


def test_abandoned_backup_leaves_no_partial_file(tmp_path: Path) -> None:
    db = open_db(tmp_path / "memory")
    with db.conn:
        db.conn.execute("CREATE TABLE filler(x BLOB)")
        db.conn.executemany("INSERT INTO filler VALUES (zeroblob(4096))", [()] * 3000)
    steps = db.backup_steps(tmp_path / "copy.db")
    next(steps)
    assert (tmp_path / ".copy.db.partial").exists()
    steps.close()
    assert not (tmp_path / ".copy.db.partial").exists() and not (tmp_path / "copy.db").exists()
    db.close()
