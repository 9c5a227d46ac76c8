"""Long-term memory: records, their vectors and full-text entries, and hybrid recall.

Hybrid score (docs/memory.md), every term in 0..1:

    score = w_v * max(cos, 0) + w_t * bm25 / max_bm25 + w_r * 0.5 ** (age / half_life) + w_i * importance

Candidates are the union of the vector pass (index.py; its best max(4k, 50) by cosine) and
the FTS5 pass (top ``candidates`` by BM25, filters applied in SQL). A vector candidate outside
the BM25 top list counts 0 for text. Pure-vector mode ranks by cosine alone. Sensitive
records are sealed (crypto.py) and kept out of FTS5, so only their vectors and plain columns
can find them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import numpy as np
import numpy.typing as npt

from appliance.config import MemoryConfig
from appliance.ipc.memory import (
    MAX_CHUNKS,
    MEMORY_KINDS,
    DocumentIn,
    DocumentStored,
    MemoryIn,
    MemoryRecord,
    RecallFilters,
    RecallHit,
    RecallRequest,
    RecallResponse,
)
from appliance.store.crypto import Sealer
from appliance.store.errors import StoreError
from appliance.store.index import BinaryIndex, IndexFilter
from appliance.store.sql import fetch_all, fetch_one, time_range

KIND_CODE = {kind: code for code, kind in enumerate(MEMORY_KINDS)}
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32
# Words in more than this share of memories are stop words for BM25 (their IDF is near zero,
# their posting lists are the whole index); at most MAX_TEXT_TERMS of the rarest words are used.
STOP_WORD_SHARE = 0.10
MAX_TEXT_TERMS = 12
STOP_WORD_MIN_DOCS = 500  # below this a posting list is cheap: no word is a stop word yet
LOAD_BATCH = 8192
# Hybrid ranking rescores the best max(4k, 50) vector candidates with text, recency, importance.
HYBRID_POOL_FACTOR = 4
HYBRID_POOL_MIN = 50
RECORD_COLUMNS = ("id, text, sealed, kind, source, tags, metadata, importance, created_at, pinned, sensitive")


def fts_query(text: str) -> str | None:
    """Free text as an FTS5 query: each word quoted, OR-ed; FTS5 syntax in the input stays inert."""
    words = _WORD.findall(text)[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{w}"' for w in words) if words else None


def query_words(text: str) -> list[str]:
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_QUERY_TERMS]


def ids_json(ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in ids])


class LongTerm:
    def __init__(self, conn: apsw.Connection, config: MemoryConfig, sealer: Sealer) -> None:
        self.conn = conn
        self.config = config
        self.sealer = sealer
        self.dim = config.vector_dim
        self.index = BinaryIndex(self.dim, keep_floats=config.index_type == "flat")
        self.purge_due = False
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

    def describe_index(self) -> str:
        exact = self.index.keep_floats
        mode = "exact float scan" if exact else "binary codes + exact rescoring"
        return f"{mode}; {self.index.live} vectors, {self.index.memory_bytes() / 2**20:.1f} MiB RAM"

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
                              (self.sealer.seal(secret, f"memory:{new_id}"), new_id))
        else:
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
        """Memories stored while the engine was down: the agent embeds them later."""
        rows = fetch_all(self.conn, "SELECT m.id, m.text, m.sealed FROM memories m WHERE m.forgotten_at IS NULL "
                                    "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.id = m.id) ORDER BY m.id LIMIT ?",
                         (limit,))
        found = []
        for memory_id, text, sealed in rows:
            if sealed is not None:
                text = json.loads(self.sealer.open(sealed, f"memory:{memory_id}"))["text"]
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
        return stored

    # --- reading ----------------------------------------------------------------------------

    def record_from_row(self, row: Sequence[Any], embedding: bytes | None = None) -> MemoryRecord:
        ident, text, sealed, kind, source, tags, metadata, importance, created, pinned, sensitive = row
        meta = json.loads(metadata)
        if sealed is not None:
            secret = json.loads(self.sealer.open(sealed, f"memory:{ident}"))
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

    def vectors(self, ids: Iterable[int]) -> dict[int, bytes]:
        rows = fetch_all(self.conn, "SELECT id, embedding FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
                         (ids_json(ids),))
        return {int(i): bytes(blob) for i, blob in rows}

    def similarities(self, ids: Iterable[int], query: npt.NDArray[np.float32]) -> tuple[
            npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact cosine similarity of the stored vectors of ``ids`` (those that have one)."""
        rows = fetch_all(self.conn, "SELECT id, embedding FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
                         (ids_json(ids),))
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return found, matrix @ query

    # --- recall -----------------------------------------------------------------------------

    def _tag_ids(self, tags: list[str]) -> npt.NDArray[np.int64]:
        allowed: set[int] | None = None
        for tag in tags:
            ids = {r[0] for r in self.conn.execute("SELECT memory_id FROM memory_tags WHERE tag = ?", (tag,))}
            allowed = ids if allowed is None else allowed & ids
        return np.fromiter(allowed or (), dtype=np.int64)

    def _index_filter(self, f: RecallFilters) -> IndexFilter | None:
        if f == RecallFilters():
            return None
        return IndexFilter(
            kinds=frozenset(KIND_CODE[k] for k in f.kinds) if f.kinds else None,
            sources=frozenset(self.index.source_codes[s] for s in f.sources if s in self.index.source_codes)
            if f.sources else None,
            since=f.since, until=f.until, ids=self._tag_ids(f.tags) if f.tags else None)

    @staticmethod
    def _filter_sql(f: RecallFilters) -> tuple[str, list[object]]:
        """WHERE clauses over ``m`` (memories); values only ever travel as parameters."""
        clauses, params = ["m.forgotten_at IS NULL"], list[object]()
        for column, values in (("m.kind", f.kinds), ("m.source", f.sources)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        times, bounds = time_range("m.created_at", f.since, f.until)
        clauses.extend(times)
        params.extend(bounds)
        for tag in f.tags or []:
            clauses.append("m.id IN (SELECT memory_id FROM memory_tags WHERE tag = ?)")
            params.append(tag)
        return " AND ".join(clauses), params

    def vector_scores(self, query: npt.NDArray[np.float32], count: int,
                      where: IndexFilter | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Ids and exact cosine similarities of at least the best ``count`` memories (unordered)."""
        if self.index.keep_floats:
            return self.index.exact(query, count, where)
        # A fixed candidate count loses recall as the store grows and Hamming neighbourhoods
        # crowd, so it grows with the store (docs/memory.md has the measurements).
        candidates = max(self.config.candidates, count, int(self.index.live * self.config.candidate_fraction))
        if where is not None and len(allowed := self.index.allowed_ids(where)) <= candidates:
            ids = allowed  # a narrow filter: score every allowed row exactly
        else:
            ids = self.index.nearest(query, candidates, where)
        return self.similarities(ids.tolist(), query)

    def _text_match(self, query: str) -> str | None:
        """The FTS5 query for ``query``: its rarest words that occur at all, stop words dropped."""
        words = query_words(query)
        if not words:
            return None
        frequency: dict[str, int] = dict(fetch_all(
            self.conn, f"SELECT term, doc FROM memory_fts_terms WHERE term IN ({', '.join('?' * len(words))})",  # noqa: S608
            tuple(words)))
        present = sorted((w for w in words if w in frequency), key=lambda w: frequency[w])
        total = max(self.index.live, max(frequency.values(), default=0))
        limit = max(STOP_WORD_SHARE * total, STOP_WORD_MIN_DOCS)
        rare = [w for w in present if frequency[w] <= limit] or present[:1]
        return fts_query(" ".join(rare[:MAX_TEXT_TERMS]))

    def text_scores(self, query: str, f: RecallFilters) -> dict[int, float]:
        match = self._text_match(query)
        if match is None:
            return {}
        where, params = self._filter_sql(f)
        rows = fetch_all(self.conn,
            f"SELECT f.rowid, -bm25(memory_fts) FROM memory_fts f JOIN memories m ON m.id = f.rowid "  # noqa: S608
            f"WHERE memory_fts MATCH ? AND {where} ORDER BY bm25(memory_fts) LIMIT ?",
            (match, *params, self.config.candidates))
        best = max((r[1] for r in rows), default=0.0)
        return {int(r[0]): (r[1] / best if best > 0 else 0.0) for r in rows}

    def recall(self, request: RecallRequest) -> RecallResponse:
        started = time.perf_counter()
        query = self.unit_vector(request.embedding) if request.embedding is not None else None
        similarity: dict[int, float] = {}
        text: dict[int, float] = {}
        if query is not None and request.mode != "text":
            ids, scores = self.vector_scores(query, request.k, self._index_filter(request.filters))
            # Pure vector mode needs only the k best; hybrid keeps a wider pool for the other terms.
            pool = request.k if request.mode == "vector" else max(HYBRID_POOL_FACTOR * request.k, HYBRID_POOL_MIN)
            if len(ids) > pool:
                best = np.argpartition(-scores, pool - 1)[:pool]
                ids, scores = ids[best], scores[best]
            similarity = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        if request.query is not None and request.mode != "vector":
            text = self.text_scores(request.query, request.filters)
        if query is not None and (missing := [i for i in text if i not in similarity]):
            ids, scores = self.similarities(missing, query)
            similarity.update(zip(ids.tolist(), scores.tolist(), strict=True))
        hits = self._rank(request, similarity, text)
        return RecallResponse(hits=hits, mode=request.mode, took_ms=(time.perf_counter() - started) * 1e3)

    def _rank(self, request: RecallRequest, similarity: dict[int, float], text: dict[int, float]) -> list[RecallHit]:
        cfg, now = self.config, time.time()
        half_life = cfg.recency_half_life_days * 86_400
        rows = fetch_all(self.conn, "SELECT id, created_at, importance FROM memories WHERE id IN "
                                    "(SELECT value FROM json_each(?))", (ids_json(set(similarity) | set(text)),))
        scored = []
        for memory_id, created, importance in rows:
            recency = 0.5 ** (max(0.0, now - created) / half_life)
            cos = similarity.get(memory_id)
            bm25 = text.get(memory_id)
            if request.mode == "vector":
                score = cos if cos is not None else -1.0
            else:
                score = (cfg.weight_vector * max(cos or 0.0, 0.0) + cfg.weight_text * (bm25 or 0.0)
                         + cfg.weight_recency * recency + cfg.weight_importance * importance)
            scored.append((score, memory_id, cos, bm25, recency))
        scored.sort(key=lambda s: (-s[0], -s[1]))
        top = scored[: request.k]
        records = self.records([s[1] for s in top])
        return [RecallHit(score=score, similarity=cos, text_score=bm25, recency=recency, record=records[memory_id])
                for score, memory_id, cos, bm25, recency in top if memory_id in records]
