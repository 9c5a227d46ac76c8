"""The memory database: one SQLite file (apsw, WAL) with sqlite-vec for nearest neighbours.

Durability: WAL with synchronous=FULL, so a write acknowledged to a caller is on disk and
survives a power cut; the WAL is checkpointed automatically and truncated to
journal_size_limit. Schema versions live in PRAGMA user_version.
Not thread-safe by design: the store service calls it from one thread only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import cast

import apsw
import sqlite_vec

from appliance.ipc.messages import MemoryIn, MemoryRecord

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5_000
JOURNAL_SIZE_LIMIT = 64 << 20


class StoreError(Exception):
    """A request the database cannot carry out; the message says what was wrong."""


class MemoryDB:
    def __init__(self, path: Path, vector_dim: int) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.vector_dim = vector_dim
        self.conn = apsw.Connection(str(path))
        self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        self.conn.enable_load_extension(True)
        self.conn.load_extension(sqlite_vec.loadable_path())
        self.conn.enable_load_extension(False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        self._migrate()

    def _migrate(self) -> None:
        version = self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this release's {SCHEMA_VERSION}")
        with self.conn:
            if version < 1:
                # Only the validated integer dimension is interpolated (DDL cannot take parameters).
                self.conn.execute(f"""
                    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    INSERT INTO meta VALUES ('vector_dim', '{int(self.vector_dim)}');
                    CREATE TABLE memories(
                        id INTEGER PRIMARY KEY,
                        text TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        source TEXT NOT NULL,
                        metadata TEXT NOT NULL,
                        created_at REAL NOT NULL
                    );
                    CREATE INDEX memories_created ON memories(created_at);
                    CREATE VIRTUAL TABLE memory_vectors USING vec0(
                        embedding float[{int(self.vector_dim)}] distance_metric=cosine
                    );
                    PRAGMA user_version = 1;
                """)  # noqa: S608
        stored = int(self._scalar("SELECT value FROM meta WHERE key = 'vector_dim'"))
        if stored != self.vector_dim:
            raise StoreError(f"{self.path} holds {stored}-dim vectors but memory.vector_dim is "
                             f"{self.vector_dim}; keep the dimension or start a new file")

    def _scalar(self, sql: str, *args: object) -> int:
        row = self.conn.execute(sql, args).fetchone()
        return int(row[0]) if row else 0

    def _check_dim(self, vector: list[float]) -> None:
        if len(vector) != self.vector_dim:
            raise StoreError(f"embedding has {len(vector)} dimensions; this store expects {self.vector_dim}")

    def remember(self, memory: MemoryIn) -> int:
        if memory.embedding is not None:
            self._check_dim(memory.embedding)
        with self.conn:
            self.conn.execute(
                "INSERT INTO memories(text, kind, source, metadata, created_at) VALUES (?, ?, ?, ?, ?)",
                (memory.text, memory.kind, memory.source, json.dumps(memory.metadata), time.time()))
            memory_id = self.conn.last_insert_rowid()
            if memory.embedding is not None:
                self.conn.execute("INSERT INTO memory_vectors(rowid, embedding) VALUES (?, ?)",
                                  (memory_id, sqlite_vec.serialize_float32(memory.embedding)))
        return memory_id

    def get(self, memory_id: int) -> MemoryRecord | None:
        row = self.conn.execute(
            "SELECT m.id, m.text, m.kind, m.source, m.metadata, m.created_at, v.embedding "
            "FROM memories m LEFT JOIN memory_vectors v ON v.rowid = m.id WHERE m.id = ?",
            (memory_id,)).fetchone()
        if row is None:
            return None
        ident, text, kind, source, metadata, created_at, blob = row
        embedding = list(memoryview(blob).cast("f")) if blob is not None else None
        return MemoryRecord(id=ident, text=text, kind=kind, source=source,
                            metadata=json.loads(metadata), created_at=created_at, embedding=embedding)

    def search(self, vector: list[float], k: int) -> list[tuple[float, MemoryRecord]]:
        self._check_dim(vector)
        rows = self.conn.execute(
            "SELECT rowid, distance FROM memory_vectors WHERE embedding MATCH ? AND k = ? "
            "ORDER BY distance", (sqlite_vec.serialize_float32(vector), k)).fetchall()
        hits = []
        for memory_id, distance in rows:
            record = self.get(cast(int, memory_id))
            if record is not None:
                hits.append((cast(float, distance), record))
        return hits

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM memories")

    def close(self) -> None:
        self.conn.close()
