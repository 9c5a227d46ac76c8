"""Long-term memory: records with their vectors, full-text entries and tags.

LongTerm owns the data and knows nothing of ranking: recall.py reads it to answer queries.

Sensitive records are sealed (crypto.py) and kept out of FTS5, so only their vectors and
plain columns can find them. Every write runs in `transaction`, which rebuilds the RAM index
if SQLite rolls the transaction back.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import numpy as np
import numpy.typing as npt

from appliance.config import MemoryConfig
from appliance.phrases import Phrase
from appliance.protocol.store import (
    MAX_CHUNKS,
    DocumentIn,
    DocumentStored,
    MemoryIn,
    MemoryRecord,
)
from appliance.store.crypto import Sealer
from appliance.store.errors import StoreError
from appliance.store.index import KIND_CODE, BinaryIndex
from appliance.store.sealed import MEMORY
from appliance.store.sql import fetch_all, fetch_one, ids_json
from appliance.store.textindex import Rebuild
from appliance.store.vectormodel import Reembed, finish

LOAD_BATCH = 8192
TERM_CACHE_S = 300.0
TERM_CACHE_SIZE = 100_000
RECORD_COLUMNS = ("id, text, sealed, kind, source, tags, metadata, importance, created_at, pinned, sensitive")



class LongTerm:
    def __init__(self, conn: apsw.Connection, config: MemoryConfig, sealer: Sealer) -> None:
        self.conn = conn
        self.config = config
        self.sealer = sealer
        self.dim = config.vector_dim
        self.index = BinaryIndex(self.dim, keep_floats=config.index_type == "flat")
        self.purge_due = False
        self.text_rebuild: Rebuild | None = None  # set while the full-text index is rebuilt (textindex.py)
        self.vector_model: str | None = None  # who made the vectors, and a re-embedding under way (vectormodel.py)
        self.reembed: Reembed | None = None
        self._terms: dict[str, int] = {}
        self._terms_since = time.monotonic()
        self._load_index()

    # --- the index --------------------------------------------------------------------------

    def _load_index(self) -> None:
        cursor = self.conn.execute(
            "SELECT m.id, m.kind, m.source, m.created_at, v.embedding FROM vectors v JOIN memories m ON m.id = v.id "
            "WHERE m.forgotten_at IS NULL ORDER BY m.id")
        while rows := list(itertools.islice(cursor, LOAD_BATCH)):
            self._index_rows(rows)

    def _index_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        kinds = np.fromiter((KIND_CODE[r[1]] for r in rows), dtype=np.uint8, count=len(rows))
        sources = np.fromiter((self.index.source_code(r[2]) for r in rows), dtype=np.int32, count=len(rows))
        created = np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        self.index.add(ids, vectors, kinds, sources, created)

    def describe_index(self) -> Phrase:
        return Phrase("store.index_exact" if self.index.keep_floats else "store.index_binary", vectors=self.index.live,
                      mib=f"{self.index.memory_bytes() / 2**20:.1f}")

    def unit_vector(self, embedding: Sequence[float]) -> npt.NDArray[np.float32]:
        if len(embedding) != self.dim:
            raise StoreError(f"embedding has {len(embedding)} dimensions; this store expects {self.dim} "
                             "(memory.vector_dim)")
        vector = np.asarray(embedding, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm == 0.0:
            raise StoreError("embedding has zero or non-finite length; it cannot be compared")
        return vector / norm

    # --- writing ----------------------------------------------------------------------------

    def insert(self, memory: MemoryIn, *, memory_id: int | None = None, document: str | None = None,
               chunk: int | None = None, now: float | None = None) -> int:
        """Insert one record with its tags, FTS entry and vector; the caller holds the transaction."""
        vector = self.unit_vector(memory.embedding) if memory.embedding is not None else None
        created = memory.created_at if memory.created_at is not None else (now or time.time())
        text = "" if memory.sensitive else memory.text
        metadata = "{}" if memory.sensitive else json.dumps(memory.metadata)
        self.conn.execute(
            "INSERT INTO memories(id, text, kind, source, tags, metadata, importance, created_at, pinned, sensitive, "
            "document, chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (memory_id, text, memory.kind, memory.source, json.dumps(memory.tags), metadata, memory.importance,
             created, int(memory.pinned), int(memory.sensitive), document, chunk))
        new_id = memory_id if memory_id is not None else self.conn.last_insert_rowid()
        if memory.sensitive:
            secret = json.dumps({"text": memory.text, "metadata": memory.metadata}).encode()
            self.conn.execute("UPDATE memories SET sealed = ? WHERE id = ?",
                              (self.sealer.seal(secret, MEMORY.context(new_id)), new_id))
        elif self.text_rebuild is None or not self.text_rebuild.covers(new_id):
            self.conn.execute("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", (new_id, memory.text))
        self.conn.executemany("INSERT INTO memory_tags(tag, memory_id) VALUES (?, ?)",
                              [(tag, new_id) for tag in dict.fromkeys(memory.tags)])
        if vector is not None:
            self.conn.execute("INSERT INTO vectors(id, embedding) VALUES (?, ?)", (new_id, vector.tobytes()))
            self.index.add(np.array([new_id], dtype=np.int64), vector.reshape(1, -1),
                           np.array([KIND_CODE[memory.kind]], dtype=np.uint8),
                           np.array([self.index.source_code(memory.source)], dtype=np.int32),
                           np.array([created], dtype=np.float64))
        return new_id

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; if it rolls back, the RAM index is rebuilt to match the file."""
        try:
            with self.conn:
                yield
        except BaseException:
            self.index = BinaryIndex(self.dim, keep_floats=self.index.keep_floats)
            self._load_index()
            raise

    def remember(self, memory: MemoryIn) -> int:
        if memory.embedding is not None:
            self.unit_vector(memory.embedding)  # refuse before anything is written
        with self.transaction():
            return self.insert(memory)

    def delete(self, ids: Sequence[int]) -> None:
        """Remove records entirely (archived or replaced); the caller holds the transaction."""
        doc = ids_json(ids)
        self.conn.execute("DELETE FROM memory_fts WHERE rowid IN (SELECT value FROM json_each(?))", (doc,))
        self.conn.execute("DELETE FROM vectors WHERE id IN (SELECT value FROM json_each(?))", (doc,))
        self.conn.execute("DELETE FROM memory_tags WHERE memory_id IN (SELECT value FROM json_each(?))", (doc,))
        self.conn.execute("DELETE FROM memories WHERE id IN (SELECT value FROM json_each(?))", (doc,))
        for memory_id in ids:
            self.index.remove(memory_id)

    def forget(self, memory_id: int) -> bool | None:
        """Tombstone: the row keeps its id, kind, source and time; its content is erased.

        None when there is no such memory, False when it was already forgotten.
        """
        row = fetch_one(self.conn, "SELECT forgotten_at FROM memories WHERE id = ?", (memory_id,))
        if row is None:
            return None
        if row[0] is not None:
            return False
        with self.transaction():
            self.conn.execute("DELETE FROM memory_fts WHERE rowid = ?", (memory_id,))
            self.conn.execute("DELETE FROM vectors WHERE id = ?", (memory_id,))
            self.conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (memory_id,))
            self.conn.execute("UPDATE memories SET text = '', sealed = NULL, metadata = '{}', tags = '[]', "
                              "forgotten_at = ? WHERE id = ?", (time.time(), memory_id))
        self.index.remove(memory_id)
        self.purge_due = True
        return True

    def purge(self) -> None:
        """Rewrite the full-text index without forgotten terms.

        FTS5 only marks a deleted row; its words stay in the index segments until they are
        merged. 'optimize' rewrites the whole index, so the store runs this at most once a
        minute after a forget rather than on every forget (docs/memory.md).
        """
        with self.conn:
            self.conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('optimize')")
        self.purge_due = False

    def ingest(self, doc: DocumentIn) -> DocumentStored:
        embeddings: list[list[float] | None] = [None] * len(doc.chunks)
        if doc.embeddings is not None:
            embeddings = list(doc.embeddings)
        for i, vector in enumerate(doc.embeddings or []):
            try:
                self.unit_vector(vector)
            except StoreError as exc:
                raise StoreError(f"embeddings[{i}]: {exc}") from None
        if doc.first_chunk + len(doc.chunks) > MAX_CHUNKS:
            raise StoreError(f"{doc.path}: more than {MAX_CHUNKS} chunks; raise memory.chunk_chars or split the file")
        with self.transaction():
            old = []
            if doc.first_chunk == 0:
                old = [r[0] for r in self.conn.execute("SELECT id FROM memories WHERE document = ?", (doc.path,))]
                self.delete(old)
            now = time.time()
            for i, (chunk, embedding) in enumerate(zip(doc.chunks, embeddings, strict=True), doc.first_chunk):
                memory = MemoryIn(text=chunk, kind="document", source=doc.path[-256:], tags=doc.tags,
                                  metadata={"path": doc.path, "chunk": i}, embedding=embedding)
                self.insert(memory, document=doc.path, chunk=i, now=now)
        return DocumentStored(path=doc.path, chunks=len(doc.chunks), replaced=len(old))

    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        """Memories without a vector yet (stored while the engine was down, and device events), for the
        agent's backfill: oldest first, but a flooding device's events (marked ``flood``) only once no
        other memory waits, so a device flushing its backlog does not hold everyone else's back."""
        waiting = ("SELECT m.id, m.text, m.sealed FROM memories m WHERE m.forgotten_at IS NULL AND NOT EXISTS "
                   "(SELECT 1 FROM vectors v WHERE v.id = m.id) AND (json_extract(m.metadata, '$.flood') IS NULL) = ? "
                   "ORDER BY m.id LIMIT ?")
        rows = fetch_all(self.conn, waiting, (True, limit))
        if len(rows) < limit:
            rows += fetch_all(self.conn, waiting, (False, limit - len(rows)))
        found = []
        for memory_id, text, sealed in rows:
            if sealed is not None:
                text = json.loads(self.sealer.open(sealed, MEMORY.context(memory_id)))["text"]
            found.append((int(memory_id), str(text)))
        return found

    def set_vectors(self, ids: Sequence[int], embeddings: Sequence[Sequence[float]]) -> int:
        """Give vectors to memories that have none; others (forgotten, archived, embedded) are skipped."""
        vectors = []
        for i, embedding in enumerate(embeddings):
            try:
                vectors.append(self.unit_vector(embedding))
            except StoreError as exc:
                raise StoreError(f"embeddings[{i}]: {exc}") from None
        stored = 0
        with self.transaction():
            for memory_id, vector in zip(ids, vectors, strict=True):
                row = fetch_one(self.conn, "SELECT kind, source, created_at FROM memories m WHERE id = ? AND "
                                           "forgotten_at IS NULL AND NOT EXISTS (SELECT 1 FROM vectors v WHERE "
                                           "v.id = m.id)", (memory_id,))
                if row is None:
                    continue
                self.conn.execute("INSERT INTO vectors(id, embedding) VALUES (?, ?)", (memory_id, vector.tobytes()))
                self.index.add(np.array([memory_id], dtype=np.int64), vector.reshape(1, -1),
                               np.array([KIND_CODE[row[0]]], dtype=np.uint8),
                               np.array([self.index.source_code(row[1])], dtype=np.int32),
                               np.array([row[2]], dtype=np.float64))
                stored += 1
            reembed = self.reembed
            if reembed is not None:
                reembed.done += stored
                if reembed.done >= reembed.total and not self.unembedded(1):
                    finish(self.conn, reembed)
                    self.reembed = None
        return stored

    # --- reading ----------------------------------------------------------------------------

    def record_from_row(self, row: Sequence[Any], embedding: bytes | None = None) -> MemoryRecord:
        ident, text, sealed, kind, source, tags, metadata, importance, created, pinned, sensitive = row
        meta = json.loads(metadata)
        if sealed is not None:
            secret = json.loads(self.sealer.open(sealed, MEMORY.context(ident)))
            text, meta = secret["text"], secret["metadata"]
        vector = np.frombuffer(embedding, dtype=np.float32).tolist() if embedding is not None else None
        return MemoryRecord(id=ident, text=text, kind=kind, source=source, tags=json.loads(tags), metadata=meta,
                            importance=importance, created_at=created, pinned=bool(pinned),
                            sensitive=bool(sensitive), embedding=vector)

    def get(self, memory_id: int) -> MemoryRecord | None:
        row = fetch_one(self.conn, f"SELECT {RECORD_COLUMNS} FROM memories WHERE id = ? AND forgotten_at IS NULL",  # noqa: S608
                                (memory_id,))
        if row is None:
            return None
        vec = fetch_one(self.conn, "SELECT embedding FROM vectors WHERE id = ?", (memory_id,))
        return self.record_from_row(row, vec[0] if vec else None)

    def records(self, ids: Sequence[int], *, with_vectors: bool = False) -> dict[int, MemoryRecord]:
        rows = fetch_all(self.conn, f"SELECT {RECORD_COLUMNS} FROM memories WHERE id IN "  # noqa: S608
                                 "(SELECT value FROM json_each(?))", (ids_json(ids),))
        vectors = self.vectors(ids) if with_vectors else {}
        return {row[0]: self.record_from_row(row, vectors.get(row[0])) for row in rows}

    def term_frequencies(self, words: list[str]) -> dict[str, int]:
        """How many memories hold each word (FTS5's vocabulary), cached for TERM_CACHE_S.

        A vocabulary lookup costs ~0.3 ms; the counts only decide which words are too common
        to search for, so a few minutes' staleness does no harm. A word not stored yet is not
        cached: it may arrive the next moment (a device event searched for as it happens), and
        a cached 0 would hide it until the cache expired.
        """
        now = time.monotonic()
        if now - self._terms_since > TERM_CACHE_S or len(self._terms) > TERM_CACHE_SIZE:
            self._terms, self._terms_since = {}, now
        counts = {}
        for word in words:
            count = self._terms.get(word)
            if count is None:
                row = fetch_one(self.conn, "SELECT doc FROM memory_fts_terms WHERE term = ?", (word,))
                count = int(row[0]) if row else 0
                if count:
                    self._terms[word] = count
            counts[word] = count
        return counts

    def vectors(self, ids: Iterable[int]) -> dict[int, bytes]:
        rows = fetch_all(self.conn, "SELECT id, embedding FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
                         (ids_json(ids),))
        return {int(i): bytes(blob) for i, blob in rows}

    def similarities(self, ids: Iterable[int], query: npt.NDArray[np.float32]) -> tuple[
            npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact cosine similarity of the stored vectors of ``ids`` (those that have one)."""
        blobs = self.vectors(ids)
        found = np.fromiter(blobs, dtype=np.int64, count=len(blobs))
        matrix = np.frombuffer(b"".join(blobs.values()), dtype=np.float32).reshape(len(blobs), self.dim)
        return found, matrix @ query
