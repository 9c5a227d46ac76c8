"""The in-RAM vector index: one sign bit per dimension, scanned by Hamming distance.

A query's sign bits are compared with every live memory's (XOR + popcount over 64-bit words,
in NumPy), the `candidates` nearest by Hamming distance are fetched as float32 from SQLite and
rescored by exact cosine similarity. At 384 dims a memory costs 48 bytes of codes plus 17 bytes
of filter columns, so a million memories fit in about 65 MB; the float vectors stay on disk.
Filters on kind, source and time are masks over those columns; tags arrive as an id set.
Measurements and the alternatives tried are in docs/memory.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from appliance.protocol.store import MEMORY_KINDS

MAX_HAMMING = np.uint16(0xFFFF)
KIND_CODE = {kind: code for code, kind in enumerate(MEMORY_KINDS)}


@dataclass(frozen=True)
class IndexFilter:
    kinds: frozenset[int] | None = None
    sources: frozenset[int] | None = None  # interned source codes; empty set matches nothing
    since: float | None = None
    until: float | None = None
    ids: npt.NDArray[np.int64] | None = None  # allowed memory ids (from the tag filter)


def sign_codes(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """Pack each row's sign bits into 64-bit words (rows padded to a whole word)."""
    rows, dim = vectors.shape
    words = (dim + 63) // 64
    packed = np.zeros((rows, words * 8), dtype=np.uint8)
    packed[:, : (dim + 7) // 8] = np.packbits(vectors > 0, axis=1)
    return packed.view(np.uint64)


class BinaryIndex:
    def __init__(self, dim: int, capacity: int = 1024, *, keep_floats: bool = False) -> None:
        """``keep_floats`` also holds float32 vectors in RAM for exact scans (index_type "flat")."""
        self.dim = dim
        self.keep_floats = keep_floats
        self._floats = np.zeros((capacity if keep_floats else 0, dim), dtype=np.float32)
        self.words = (dim + 63) // 64
        self.size = 0
        self.live = 0
        self._ids = np.zeros(capacity, dtype=np.int64)
        # Word-major (words x rows): each pass of the scan reads one contiguous row of words.
        self._codes = np.zeros((self.words, capacity), dtype=np.uint64)
        self._kind = np.zeros(capacity, dtype=np.uint8)
        self._source = np.zeros(capacity, dtype=np.int32)
        self._created = np.zeros(capacity, dtype=np.float64)
        self._alive = np.zeros(capacity, dtype=bool)
        self._row_of: dict[int, int] = {}
        self.source_codes: dict[str, int] = {}

    def source_code(self, source: str) -> int:
        return self.source_codes.setdefault(source, len(self.source_codes))

    def _grow(self, needed: int) -> None:
        capacity = len(self._ids)
        if needed <= capacity:
            return
        capacity = max(needed, capacity * 2)
        for name in ("_ids", "_kind", "_source", "_created", "_alive"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)
        codes = np.zeros((self.words, capacity), dtype=np.uint64)
        codes[:, : self.size] = self._codes[:, : self.size]
        self._codes = codes
        if self.keep_floats:
            floats = np.zeros((capacity, self.dim), dtype=np.float32)
            floats[: self.size] = self._floats[: self.size]
            self._floats = floats

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], kinds: npt.NDArray[np.uint8],
            sources: npt.NDArray[np.int32], created: npt.NDArray[np.float64]) -> None:
        n = len(ids)
        self._grow(self.size + n)
        rows = slice(self.size, self.size + n)
        self._ids[rows] = ids
        self._codes[:, rows] = sign_codes(vectors).T
        if self.keep_floats:
            self._floats[rows] = vectors
        self._kind[rows] = kinds
        self._source[rows] = sources
        self._created[rows] = created
        self._alive[rows] = True
        for offset, memory_id in enumerate(ids.tolist()):
            old = self._row_of.get(memory_id)
            if old is not None:  # re-added (restored): the new row wins
                self._alive[old] = False
                self.live -= 1
            self._row_of[memory_id] = self.size + offset
        self.size += n
        self.live += n

    def remove(self, memory_id: int) -> None:
        row = self._row_of.pop(memory_id, None)
        if row is not None and self._alive[row]:
            self._alive[row] = False
            self.live -= 1

    def _mask(self, where: IndexFilter) -> npt.NDArray[np.bool_]:
        n = self.size
        mask = self._alive[:n].copy()
        if where.kinds is not None:
            mask &= np.isin(self._kind[:n], np.fromiter(where.kinds, dtype=np.uint8))
        if where.sources is not None:
            mask &= np.isin(self._source[:n], np.fromiter(where.sources, dtype=np.int32))
        if where.since is not None:
            mask &= self._created[:n] >= where.since
        if where.until is not None:
            mask &= self._created[:n] <= where.until
        if where.ids is not None:
            mask &= np.isin(self._ids[:n], where.ids)
        return mask

    def allowed_ids(self, where: IndexFilter) -> npt.NDArray[np.int64]:
        return self._ids[: self.size][self._mask(where)]

    def nearest(self, query: npt.NDArray[np.float32], count: int,
                where: IndexFilter | None = None) -> npt.NDArray[np.int64]:
        """Ids of the ``count`` rows nearest to ``query`` in Hamming distance (unordered)."""
        n = self.size
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        distance = self.hamming(query)
        mask = self._alive[:n] if where is None else self._mask(where)
        distance[~mask] = MAX_HAMMING
        allowed = int(mask.sum()) if where is not None else self.live
        count = min(count, allowed)
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        if count >= n:
            return self._ids[np.flatnonzero(mask)]
        # Distances are small integers: a histogram finds the cut-off faster than argpartition.
        histogram = np.bincount(distance, minlength=self.words * 64 + 1)
        cutoff = int(np.searchsorted(np.cumsum(histogram), count))
        closer = np.flatnonzero(distance < cutoff)
        at_cutoff = np.flatnonzero(distance == cutoff)[: count - len(closer)]
        return self._ids[np.concatenate((closer, at_cutoff))]

    def hamming(self, query: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
        """Hamming distance from the query's sign bits to every row, one 64-bit word at a time."""
        n = self.size
        code = sign_codes(query.reshape(1, -1))[0]
        distance = np.zeros(n, dtype=np.uint16)
        xor = np.empty(n, dtype=np.uint64)
        bits = np.empty(n, dtype=np.uint8)
        for word in range(self.words):
            np.bitwise_xor(self._codes[word, :n], code[word], out=xor)
            np.bitwise_count(xor, out=bits)
            np.add(distance, bits, out=distance)
        return distance

    def exact(self, query: npt.NDArray[np.float32], count: int,
              where: IndexFilter | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``count`` best rows by exact dot product over RAM floats (needs keep_floats)."""
        n = self.size
        scores = self._floats[:n] @ query
        mask = self._alive[:n] if where is None else self._mask(where)
        scores[~mask] = -np.inf
        count = min(count, int(mask.sum()))
        if count <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows = np.argpartition(-scores, count - 1)[:count] if count < n else np.flatnonzero(mask)
        return self._ids[rows], scores[rows]

    def memory_bytes(self) -> int:
        arrays = (self._ids, self._codes, self._kind, self._source, self._created, self._alive, self._floats)
        return sum(a.nbytes for a in arrays)
