"""The archive tier: old memories packed into zstd segments, sealed, and out of the hot indexes.

A segment holds up to ``archive_segment_records`` memories in creation order. Its payload is
two zstd frames: the records as JSON lines, compressed with a dictionary trained on this
store's own records (kept sealed in ``zstd_dicts``, as it contains text; reused for a month,
then trained afresh), and
the float32 vectors with their bytes grouped by position (exponent bytes together compress far
better). The payload is sealed with AES-GCM like every secret; ``sha256`` covers the sealed
bytes. ``archive_index`` keeps id, time, source and kind of each archived memory, so archived
memories are found by time range and source and restored by id. Restored memories come back
pinned, or the next run would archive them again at once.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Generator
from typing import Any

import apsw
import numpy as np
import zstandard

from appliance.config import MemoryConfig
from appliance.protocol.store import ArchiveProgress, ArchiveQuery, MemoryIn, MemoryRecord
from appliance.store.crypto import Sealer
from appliance.store.errors import Missing, StoreError
from appliance.store.longterm import RECORD_COLUMNS, LongTerm
from appliance.store.sealed import DICTIONARY, SEGMENT
from appliance.store.sql import fetch_all, fetch_one, integer, time_range
from appliance.store.vectormodel import vector_usable

LEVEL = 9
DICT_BYTES = 64 << 10
DICT_SAMPLES = 4000
MIN_DICT_SAMPLES = 64
DICT_MAX_AGE_S = 30 * 86_400


def shuffle_bytes(raw: bytes) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 4).T.tobytes()


def unshuffle_bytes(raw: bytes) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(4, -1).T.tobytes()


class Archive:
    def __init__(self, conn: apsw.Connection, config: MemoryConfig, sealer: Sealer, longterm: LongTerm) -> None:
        self.conn = conn
        self.config = config
        self.sealer = sealer
        self.longterm = longterm
        self._cache: tuple[int, dict[int, dict[str, Any]]] | None = None

    # --- packing ----------------------------------------------------------------------------

    def _latest_dictionary(self) -> tuple[int, zstandard.ZstdCompressionDict] | None:
        """The newest dictionary when it is recent enough to reuse: one per month, not one per run."""
        row = fetch_one(self.conn, "SELECT id FROM zstd_dicts WHERE created_at > ? ORDER BY id DESC LIMIT 1",
                        (time.time() - DICT_MAX_AGE_S,))
        if row is None:
            return None
        dictionary = self._dictionary(int(row[0]))
        return (int(row[0]), dictionary) if dictionary is not None else None

    def _train(self, cutoff: float) -> tuple[int, zstandard.ZstdCompressionDict] | None:
        rows = fetch_all(self.conn,
            f"SELECT {RECORD_COLUMNS} FROM memories WHERE created_at < ? AND pinned = 0 "  # noqa: S608
            "AND forgotten_at IS NULL AND sensitive = 0 ORDER BY random() LIMIT ?", (cutoff, DICT_SAMPLES))
        if len(rows) < MIN_DICT_SAMPLES:
            return None
        samples: list[bytes | bytearray | memoryview] = [
            self._line(self.longterm.record_from_row(row), None, None) for row in rows]
        try:
            dictionary = zstandard.train_dictionary(DICT_BYTES, samples, level=LEVEL)
        except zstandard.ZstdError:
            return None  # too little or too uniform data: plain zstd does the job
        with self.conn:
            self.conn.execute("INSERT INTO zstd_dicts(created_at, sealed) VALUES (?, x'')", (time.time(),))
            dict_id = self.conn.last_insert_rowid()
            self.conn.execute("UPDATE zstd_dicts SET sealed = ? WHERE id = ?",
                              (self.sealer.seal(dictionary.as_bytes(), DICTIONARY.context(dict_id)), dict_id))
        return dict_id, dictionary

    def _dictionary(self, dict_id: int | None) -> zstandard.ZstdCompressionDict | None:
        if dict_id is None:
            return None
        row = fetch_one(self.conn, "SELECT sealed FROM zstd_dicts WHERE id = ?", (dict_id,))
        if row is None:
            raise StoreError(f"archive dictionary {dict_id} is missing")
        return zstandard.ZstdCompressionDict(self.sealer.open(row[0], DICTIONARY.context(dict_id)))

    def _line(self, record: MemoryRecord, document: str | None, chunk: int | None) -> bytes:
        fields = record.model_dump(exclude={"embedding", "archived"})
        fields.update(document=document, chunk=chunk, vector=record.embedding is not None)
        if record.embedding is not None and self.longterm.vector_model is not None:
            fields["vector_model"] = self.longterm.vector_model  # vectormodel.py, rule 4
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()

    def steps(self, older_than_s: float) -> Generator[ArchiveProgress, None, None]:
        """Archive everything older than the cutoff, one committed segment per step."""
        cutoff = time.time() - older_than_s
        eligible = "created_at < ? AND pinned = 0 AND forgotten_at IS NULL"
        total = integer(self.conn, f"SELECT count(*) FROM memories WHERE {eligible}", (cutoff,))  # noqa: S608
        progress = ArchiveProgress(done=0, total=total)
        yield progress
        if total == 0:
            yield progress.model_copy(update={"finished": True})
            return
        trained = self._latest_dictionary() or self._train(cutoff)
        dict_id, dictionary = trained if trained else (None, None)
        text_zstd = zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary)
        vector_zstd = zstandard.ZstdCompressor(level=LEVEL)
        done = segments = raw_total = stored_total = 0
        while True:
            ids = [r[0] for r in self.conn.execute(
                f"SELECT id FROM memories WHERE {eligible} ORDER BY created_at, id LIMIT ?",  # noqa: S608
                (cutoff, self.config.archive_segment_records))]
            if not ids:
                break
            raw, stored = self._pack(ids, dict_id, text_zstd, vector_zstd)
            done, segments = done + len(ids), segments + 1
            raw_total, stored_total = raw_total + raw, stored_total + stored
            progress = ArchiveProgress(done=done, total=max(total, done), segments=segments,
                                       raw_bytes=raw_total, stored_bytes=stored_total)
            yield progress
        yield progress.model_copy(update={"finished": True})

    def overflow(self, source: str, keep: int) -> int:
        """Archive the oldest of ``source``'s live events beyond its newest ``keep`` (the per-device
        storage quota): one committed segment at most, so the store serves requests between calls;
        how many moved (0: within the quota)."""
        eligible = "source = ? AND kind = 'event' AND pinned = 0 AND forgotten_at IS NULL"  # the partial index
        excess = integer(self.conn, f"SELECT count(*) FROM memories WHERE {eligible}", (source,)) - keep  # noqa: S608
        if excess <= 0:
            return 0
        ids = [r[0] for r in self.conn.execute(
            f"SELECT id FROM memories WHERE {eligible} ORDER BY created_at, id LIMIT ?",  # noqa: S608
            (source, min(self.config.archive_segment_records, excess)))]
        dict_id, dictionary = self._latest_dictionary() or (None, None)
        self._pack(ids, dict_id, zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary),
                   zstandard.ZstdCompressor(level=LEVEL))
        return len(ids)

    def _pack(self, ids: list[int], dict_id: int | None, text_zstd: zstandard.ZstdCompressor,
              vector_zstd: zstandard.ZstdCompressor) -> tuple[int, int]:
        records = self.longterm.records(ids, with_vectors=True)
        placement = {r[0]: (r[1], r[2]) for r in self.conn.execute(
            "SELECT id, document, chunk FROM memories WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),))}
        lines, vectors = [], []
        for memory_id in ids:
            record = records[memory_id]
            lines.append(self._line(record, *placement[memory_id]))
            if record.embedding is not None:
                vectors.append(np.asarray(record.embedding, dtype=np.float32).tobytes())
        text_raw = b"\n".join(lines)
        vector_raw = b"".join(vectors)
        text_frame = text_zstd.compress(text_raw)
        payload = struct.pack(">I", len(text_frame)) + text_frame + vector_zstd.compress(shuffle_bytes(vector_raw))
        created = [records[i].created_at for i in ids]
        with self.longterm.transaction():
            self.conn.execute(
                "INSERT INTO archive_segments(first_at, last_at, count, dict_id, raw_bytes, sha256, sealed, "
                "created_at) VALUES (?, ?, ?, ?, ?, '', x'', ?)",
                (min(created), max(created), len(ids), dict_id, len(text_raw) + len(vector_raw), time.time()))
            segment_id = self.conn.last_insert_rowid()
            sealed = self.sealer.seal(payload, SEGMENT.context(segment_id))
            self.conn.execute("UPDATE archive_segments SET sealed = ? WHERE id = ?", (sealed, segment_id))
            self.update_checksum(segment_id, sealed)
            self.conn.executemany(
                "INSERT INTO archive_index(memory_id, segment_id, created_at, source, kind) VALUES (?, ?, ?, ?, ?)",
                [(i, segment_id, records[i].created_at, records[i].source, records[i].kind) for i in ids])
            self.longterm.delete(ids)
        return len(text_raw) + len(vector_raw), len(sealed)

    def update_checksum(self, segment_id: int, sealed: bytes) -> None:
        self.conn.execute("UPDATE archive_segments SET sha256 = ? WHERE id = ?",
                          (hashlib.sha256(sealed).hexdigest(), segment_id))

    # --- reading back -----------------------------------------------------------------------

    def _segment(self, segment_id: int) -> dict[int, dict[str, Any]]:
        if self._cache and self._cache[0] == segment_id:
            return self._cache[1]
        row = fetch_one(self.conn, "SELECT dict_id, sha256, sealed FROM archive_segments WHERE id = ?",
                                (segment_id,))
        if row is None:
            raise StoreError(f"archive segment {segment_id} is missing")
        dict_id, checksum, sealed = row
        if hashlib.sha256(sealed).hexdigest() != checksum:
            raise StoreError(f"archive segment {segment_id} fails its sha256 checksum")
        payload = self.sealer.open(sealed, SEGMENT.context(segment_id))
        (text_len,) = struct.unpack(">I", payload[:4])
        dictionary = self._dictionary(dict_id)
        text = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(payload[4 : 4 + text_len])
        vectors = unshuffle_bytes(zstandard.ZstdDecompressor().decompress(payload[4 + text_len :]))
        records: dict[int, dict[str, Any]] = {}
        lines = [json.loads(line) for line in text.split(b"\n")]
        # A segment written before a change of embedding model holds vectors of the old dimension.
        with_vector = sum(1 for fields in lines if fields["vector"])
        offset, width = 0, len(vectors) // with_vector if with_vector else 0
        for fields in lines:
            if fields.pop("vector"):  # vectors follow in record order
                fields["embedding_bytes"] = vectors[offset : offset + width]
                offset += width
            records[fields["id"]] = fields
        self._cache = (segment_id, records)
        return records

    def find(self, query: ArchiveQuery) -> list[MemoryRecord]:
        clauses, params = time_range("created_at", query.since, query.until)
        clauses.insert(0, "1")
        if query.source is not None:
            clauses.append("source = ?")
            params.append(query.source)
        rows = fetch_all(self.conn,
            f"SELECT memory_id, segment_id FROM archive_index WHERE {' AND '.join(clauses)} "  # noqa: S608
            "ORDER BY created_at, memory_id LIMIT ?", (*params, query.limit))
        found = []
        for memory_id, segment_id in rows:
            fields = dict(self._segment(segment_id)[memory_id])
            for extra in ("embedding_bytes", "document", "chunk", "vector_model"):
                fields.pop(extra, None)
            found.append(MemoryRecord(archived=True, **fields))
        return found

    def restore(self, ids: list[int]) -> int:
        rows = fetch_all(self.conn, "SELECT memory_id, segment_id FROM archive_index WHERE memory_id IN "
                                 "(SELECT value FROM json_each(?))", (json.dumps(ids),))
        missing = sorted(set(ids) - {r[0] for r in rows})
        if missing:
            raise Missing(f"not archived: ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        with self.longterm.transaction():
            for memory_id, segment_id in rows:
                fields = dict(self._segment(segment_id)[memory_id])
                blob = fields.pop("embedding_bytes", None)
                document, chunk = fields.pop("document"), fields.pop("chunk")
                fields.pop("id")
                fields["pinned"] = True
                made_by = fields.pop("vector_model", None)
                current = self.longterm.vector_model
                if blob is not None and (current is None or vector_usable(self.conn, made_by, current)):
                    fields["embedding"] = np.frombuffer(blob, dtype=np.float32).tolist()
                self.longterm.insert(MemoryIn(**fields), memory_id=memory_id, document=document, chunk=chunk)
                self.conn.execute("DELETE FROM archive_index WHERE memory_id = ?", (memory_id,))
            self.conn.execute("DELETE FROM archive_segments WHERE id NOT IN (SELECT segment_id FROM archive_index)")
            self.conn.execute("DELETE FROM zstd_dicts WHERE created_at <= ? AND id NOT IN "
                              "(SELECT dict_id FROM archive_segments WHERE dict_id IS NOT NULL)",
                              (time.time() - DICT_MAX_AGE_S,))
        self._cache = None
        return len(rows)
