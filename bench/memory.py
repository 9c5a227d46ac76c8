"""make bench-memory: recall latency and quality of the memory store, three methods in one run.

Methods, all asked for the 10 nearest of a query among N unit vectors of 384 dims:
  sqlite-vec flat  vec0 float[384] cosine KNN (the plain way)
  store (binary)   the store's own recall: sign-bit codes in RAM, `candidates` rescored
                   exactly from SQLite (appliance/store/index.py), through LongTerm.recall
  numpy exact      X @ q over float32 in RAM, argpartition: the floor

Latency uses random unit vectors at 10k, 100k and 1M (fewer queries for the slow ones).
Recall@10 against exact float search uses real sentences embedded with all-MiniLM-L6-v2
(bench/textset.py); random vectors have no neighbourhood structure, so their recall is shown
only as a caution. Also measured: hybrid recall latency on the text set, ring append/read,
archive compression ratio and restore speed. Results go to bench/results/memory-<host>.md.

    python bench/memory.py [--sizes 10000,100000,1000000] [--queries 200] [--text-corpus 100000]

The first run embeds the real-text set with NumPy MiniLM: ~15 min for 20k sentences on 2 cores,
~50 min more for 100k (make bench-memory TEXT_CORPUS=100000); later runs reuse bench/.cache/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import apsw
import numpy as np
import sqlite_vec

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from textset import load as load_textset

from appliance.config import MemoryConfig
from appliance.protocol.store import MemoryIn, RecallRequest, RingEntryIn
from appliance.store.db import MemoryDB

DIM = 384
K = 10
Searcher = Callable[[np.ndarray], list[int]]


def random_units(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 95, 99])
    return float(p50), float(p95), float(p99)


class SqliteVecFlat:
    def __init__(self, folder: Path, vectors: np.ndarray) -> None:
        self.conn = apsw.Connection(str(folder / "vec0.db"))
        self.conn.enable_load_extension(True)
        self.conn.load_extension(sqlite_vec.loadable_path())
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(e float[{DIM}] distance_metric=cosine)")
        with self.conn:
            self.conn.executemany("INSERT INTO v(rowid, e) VALUES (?, ?)",
                                  ((i + 1, vectors[i].tobytes()) for i in range(len(vectors))))

    def search(self, query: np.ndarray) -> list[int]:
        rows = self.conn.execute("SELECT rowid FROM v WHERE e MATCH ? AND k = ? ORDER BY distance",
                                 (query.tobytes(), K))
        return [int(r[0]) - 1 for r in rows]


class Store:
    """The real store (MemoryDB) filled through its own insert path, in large transactions."""

    def __init__(self, folder: Path, vectors: np.ndarray, texts: Sequence[str] | None = None) -> None:
        config = MemoryConfig(vector_dim=DIM)  # the shipped defaults
        self.db = MemoryDB(folder / "memory.db", config, folder / "memory.key")
        started = time.monotonic()
        for start in range(0, len(vectors), 50_000):
            with self.db.longterm.transaction():
                for i in range(start, min(start + 50_000, len(vectors))):
                    text = texts[i] if texts is not None else f"memory {i}"
                    self.db.longterm.insert(MemoryIn.model_construct(
                        text=text, kind="event", source="bench", tags=[], importance=0.5, pinned=False,
                        sensitive=False, created_at=None, metadata={}, embedding=vectors[i].tolist()))
        self.load_s = time.monotonic() - started

    def search(self, query: np.ndarray) -> list[int]:
        request = RecallRequest.model_construct(query=None, embedding=query.tolist(), k=K, mode="vector",
                                                filters=RecallRequest.model_fields["filters"].default)
        return [h.record.id - 1 for h in self.db.recall(request).hits]

    def reopen_s(self) -> float:
        path, config, key = self.db.path, self.db.config, self.db.keys.path
        self.db.close()
        started = time.monotonic()
        self.db = MemoryDB(path, config, key)
        return time.monotonic() - started


class NumpyExact:
    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, query: np.ndarray) -> list[int]:
        scores = self.vectors @ query
        best = np.argpartition(-scores, K)[:K]
        return best[np.argsort(-scores[best])].tolist()


def measure(search: Searcher, queries: np.ndarray) -> tuple[list[float], list[list[int]]]:
    search(queries[0])  # warm caches once
    times, results = [], []
    for q in queries:
        started = time.perf_counter()
        results.append(search(q))
        times.append(time.perf_counter() - started)
    return times, results


def recall_at_k(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)]))


def latency_table(sizes: list[int], queries: int, work: Path, out: list[str]) -> None:
    out += ["## Latency, random unit vectors (384 dims, k=10)", "",
            "Recall on random data is a caution, not the quality measure: random unit vectors have no "
            "neighbourhoods (every cosine is 0 +/- 0.05), so sign bits say little about them. Quality is "
            "measured on real text below.", "",
            "| N | method | queries | p50 ms | p95 ms | p99 ms | recall@10 (random data) | build s |",
            "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        vectors = random_units(n, seed=n)
        asks = random_units(queries, seed=n + 1)
        numpy_exact = NumpyExact(vectors)
        _, truth = measure(numpy_exact.search, asks)
        folder = Path(tempfile.mkdtemp(dir=work))
        rows = []
        started = time.monotonic()
        vec0 = SqliteVecFlat(folder, vectors)
        vec0_build = time.monotonic() - started
        slow_queries = asks[: max(20, queries // 10)] if n >= 500_000 else asks
        t, found = measure(vec0.search, slow_queries)
        rows.append(("sqlite-vec flat", len(slow_queries), t, recall_at_k(found, truth[: len(found)]), vec0_build))
        vec0.conn.close()
        store = Store(folder, vectors)
        t, found = measure(store.search, asks)
        rows.append(("store (binary)", queries, t, recall_at_k(found, truth), store.load_s))
        t, found = measure(numpy_exact.search, asks)
        rows.append(("numpy exact", queries, t, 1.0, 0.0))
        for name, count, times, recall, build in rows:
            p50, p95, p99 = percentiles(times)
            out.append(f"| {n:,} | {name} | {count} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {recall:.3f} | {build:.1f} |")
        print("\n".join(out[-3:]), flush=True)
        reopen = store.reopen_s()
        out.append(f"| {n:,} | store: reopen + index rebuild {reopen:.2f} s, index RAM "
                   f"{store.db.longterm.index.memory_bytes() / 2**20:.1f} MiB, file "
                   f"{store.db.path.stat().st_size / 2**20:.0f} MiB | | | | | | |")
        store.db.close()
        shutil.rmtree(folder)
    out.append("")


def largest_textset(corpus: int | None = None) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """The asked-for real-text set, else the largest already embedded, else 20k (~15 min to embed)."""
    if corpus is None:
        cache = Path(__file__).parent / ".cache"
        cached = sorted((int(p.name.split("-")[1]) for p in cache.glob("textset-*-300.npz")), reverse=True)
        corpus = cached[0] if cached else 20_000
    return load_textset(corpus)


def fitted_filler(real: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Unit vectors from a Gaussian with the real embeddings' mean and covariance."""
    rng = np.random.default_rng(seed)
    factor = np.linalg.cholesky(np.cov(real.T) + 1e-6 * np.eye(DIM)).astype(np.float32)
    mean = real.mean(axis=0).astype(np.float32)
    out = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):
        block = mean + rng.standard_normal((min(100_000, count - start), DIM), dtype=np.float32) @ factor.T
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def scale_table(real: np.ndarray, asks: np.ndarray, sizes: list[int], work: Path, out: list[str]) -> None:
    out += ["## Recall@10 at scale: real sentences plus fitted filler", "",
            f"Real MiniLM queries against the {len(real):,} real sentences plus filler vectors drawn from a Gaussian "
            "with the real embeddings' mean and covariance, up to N. Store at its shipped defaults "
            "(candidates = max(512, 0.2 % of N)).", "",
            "| N | real | filler | store recall@10 | store p50 ms | store p95 ms | numpy exact p95 ms |",
            "|---|---|---|---|---|---|---|"]
    for n in sizes:
        if n < len(real):
            continue
        vectors = np.concatenate([real, fitted_filler(real, n - len(real), seed=n)])
        exact = NumpyExact(vectors)
        t_exact, truth = measure(exact.search, asks)
        folder = Path(tempfile.mkdtemp(dir=work))
        store = Store(folder, vectors)
        t, found = measure(store.search, asks)
        p50, p95, _ = percentiles(t)
        out.append(f"| {n:,} | {len(real):,} | {n - len(real):,} | {recall_at_k(found, truth):.3f} | {p50:.2f} | "
                   f"{p95:.2f} | {percentiles(t_exact)[1]:.2f} |")
        print(out[-1], flush=True)
        store.db.close()
        shutil.rmtree(folder)
    out.append("")


def text_tables(sizes: list[int], corpus: int | None, work: Path, out: list[str]) -> None:
    docs, doc_vectors, asks, ask_vectors = largest_textset(corpus)
    truth = [NumpyExact(doc_vectors).search(q) for q in ask_vectors]
    folder = Path(tempfile.mkdtemp(dir=work))
    out += [f"## Recall@10 on real text ({len(docs):,} sentences, {len(asks)} queries, all-MiniLM-L6-v2)", "",
            "| method | candidates | recall@10 | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    vec0 = SqliteVecFlat(folder, doc_vectors)
    t, found = measure(vec0.search, ask_vectors)
    out.append(f"| sqlite-vec flat | - | {recall_at_k(found, truth):.3f} | {percentiles(t)[0]:.2f} | "
               f"{percentiles(t)[1]:.2f} |")
    vec0.conn.close()
    store = Store(folder, doc_vectors, docs)
    shipped = store.db.longterm.config
    for candidates in (64, 128, 256, 512, 1024, 2048, None):
        label = f"{candidates} (fixed)" if candidates else "shipped: max(512, 0.2 % of N)"
        update = {"candidates": candidates, "candidate_fraction": 0.0} if candidates else {}
        store.db.longterm.config = shipped.model_copy(update=update)
        t, found = measure(store.search, ask_vectors)
        out.append(f"| store (binary) | {label} | {recall_at_k(found, truth):.3f} | {percentiles(t)[0]:.2f} | "
                   f"{percentiles(t)[1]:.2f} |")
    t, found = measure(NumpyExact(doc_vectors).search, ask_vectors)
    out.append(f"| numpy exact | - | 1.000 | {percentiles(t)[0]:.2f} | {percentiles(t)[1]:.2f} |")
    store.db.longterm.config = shipped

    hybrid_times = []
    for text, vector in zip(asks, ask_vectors, strict=True):
        request = RecallRequest(query=text, embedding=vector.tolist(), k=K)
        started = time.perf_counter()
        store.db.recall(request)
        hybrid_times.append(time.perf_counter() - started)
    p50, p95, p99 = percentiles(hybrid_times)
    out += ["", f"Hybrid recall (vector + BM25 + recency) on the same set: p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
            f"p99 {p99:.2f} ms.", ""]
    print("\n".join(out[-14:]), flush=True)
    archive_table(store, out)
    ring_table(store, out)
    store.db.close()
    shutil.rmtree(folder)
    scale_table(doc_vectors, ask_vectors, sizes, work, out)


def archive_table(store: Store, out: list[str]) -> None:
    db = store.db
    with db.longterm.transaction():
        db.conn.execute("UPDATE memories SET created_at = created_at - 60 * 86400")
    started = time.monotonic()
    last = None
    for progress in db.archive.steps(30 * 86_400):
        last = progress
    took = time.monotonic() - started
    assert last is not None
    segments = db.conn.execute("SELECT count(*) FROM archive_segments").fetchone()[0]
    text_frames = 0  # the JSON part of each payload, compressed with the trained dictionary
    for segment_id, sealed in db.conn.execute("SELECT id, sealed FROM archive_segments"):
        payload = db.sealer.open(sealed, f"segment:{segment_id}")
        text_frames += int.from_bytes(payload[:4], "big")
    ids = [r[0] for r in db.conn.execute("SELECT memory_id FROM archive_index ORDER BY memory_id LIMIT 2000")]
    started = time.monotonic()
    db.archive.restore(ids)
    restore_s = time.monotonic() - started
    vector_bytes = last.done * DIM * 4
    text_bytes = last.raw_bytes - vector_bytes
    vector_stored = last.stored_bytes - text_frames
    out += ["## Archive", "",
            f"{last.done:,} memories (real sentences with their 384-dim vectors) into {segments} segments in "
            f"{took:.1f} s: {last.raw_bytes:,} raw bytes -> {last.stored_bytes:,} stored, "
            f"**{last.raw_bytes / last.stored_bytes:.2f}x** overall. Records as JSON: {text_bytes:,} -> "
            f"{text_frames:,} bytes (**{text_bytes / text_frames:.2f}x**, zstd 9 with the trained dictionary); "
            f"float32 vectors: {vector_bytes:,} -> ~{vector_stored:,} bytes ({vector_bytes / vector_stored:.2f}x, "
            "byte-grouped zstd; random-looking mantissas barely compress).",
            f"Restore of {len(ids):,} archived memories back into the hot tier: {restore_s:.2f} s "
            f"({len(ids) / restore_s:,.0f} memories/s).", ""]
    print("\n".join(out[-4:]), flush=True)


def ring_table(store: Store, out: list[str]) -> None:
    db = store.db
    appends, reads = [], []
    for i in range(2000):
        started = time.perf_counter()
        db.ring.append(RingEntryIn(conversation="bench", text=f"turn {i}: the pump on line 3 reads 4.2 bar"))
        appends.append(time.perf_counter() - started)
    for _ in range(2000):
        started = time.perf_counter()
        db.ring.read("bench", 20)
        reads.append(time.perf_counter() - started)
    a, r = percentiles(appends), percentiles(reads)
    out += ["## Short-term ring (size 1000, 2000 appends past the bound)", "",
            "| operation | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|",
            f"| append (sealed, synchronous=NORMAL) | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.3f} |",
            f"| read last 20 | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |", ""]
    print("\n".join(out[-6:]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--text-corpus", type=int, default=None,
                        help="real sentences in the recall set (default: the largest embedded, else 20000)")
    parser.add_argument("--name", default="vm", help="results file suffix: the kind of machine")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    out = [f"# Memory benchmark ({time.strftime('%Y-%m-%d')})", "",
           f"Machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), "
           f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
           f"Python {platform.python_version()}, SQLite {apsw.sqlite_lib_version()}, "
           f"sqlite-vec {sqlite_vec.__version__}, NumPy {np.__version__}.",
           "All methods ran in this one process, one after another; "
           "command: `make bench-memory`.", ""]
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        latency_table(sizes, args.queries, work, out)
        if not args.skip_text:
            text_tables(sizes, args.text_corpus, work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = Path(__file__).parent / "results" / f"memory-{args.name}.md"
    results.write_text("\n".join(out) + "\n")
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
