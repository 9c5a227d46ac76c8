"""Recall: the vector pass, the text pass and the hybrid ranking over long-term memory.

Hybrid score (docs/memory.md), every term in 0..1:

    score = w_v * max(cos, 0) + w_t * bm25 / max_bm25 + w_r * 0.5 ** (age / half_life) + w_i * importance

Candidates are the union of the best max(5k, 100) of the vector pass (index.py) by cosine and
of the FTS5 pass by BM25 (filters applied in SQL; rare words only, see `text_match`). A vector candidate outside
the BM25 top list counts 0 for text. Pure-vector mode ranks by cosine alone.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from appliance.protocol.store import RecallFilters, RecallHit, RecallRequest, RecallResponse
from appliance.store.index import KIND_CODE, IndexFilter
from appliance.store.longterm import LongTerm
from appliance.store.sql import fetch_all, ids_json, time_range
from appliance.store.words import query_terms

# Words in more than this share of memories are stop words for BM25 (their IDF is near zero,
# their posting lists are the whole index); at most MAX_TEXT_TERMS of the rarest words are used.
STOP_WORD_SHARE = 0.05
MAX_TEXT_TERMS = 8
STOP_WORD_MIN_DOCS = 500  # below this a posting list is cheap: no word is a stop word yet
# Hybrid ranking scores the best max(5k, 100) of each pass (vector by cosine, text by BM25).
POOL_FACTOR = 5
POOL_MIN = 100


def fts_query(terms: list[str]) -> str | None:
    """Terms as an FTS5 query, each quoted, OR-ed. A term holds only letters and digits (words.py),
    so FTS5 syntax in the asked text stays inert."""
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


def tag_ids(lt: LongTerm, tags: list[str]) -> npt.NDArray[np.int64]:
    allowed: set[int] | None = None
    for tag in tags:
        ids = {r[0] for r in lt.conn.execute("SELECT memory_id FROM memory_tags WHERE tag = ?", (tag,))}
        allowed = ids if allowed is None else allowed & ids
    return np.fromiter(allowed or (), dtype=np.int64)


def index_filter(lt: LongTerm, f: RecallFilters) -> IndexFilter | None:
    if f == RecallFilters():
        return None
    return IndexFilter(
        kinds=frozenset(KIND_CODE[k] for k in f.kinds) if f.kinds else None,
        sources=frozenset(lt.index.source_codes[s] for s in f.sources if s in lt.index.source_codes)
        if f.sources else None,
        since=f.since, until=f.until, ids=tag_ids(lt, f.tags) if f.tags else None)


def filter_sql(f: RecallFilters) -> tuple[str, list[object]]:
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


def vector_scores(lt: LongTerm, query: npt.NDArray[np.float32], count: int,
                  where: IndexFilter | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Ids and exact cosine similarities of at least the best ``count`` memories (unordered)."""
    if lt.index.keep_floats:
        return lt.index.exact(query, count, where)
    # A fixed candidate count loses recall as the store grows and Hamming neighbourhoods
    # crowd, so it grows with the store (docs/memory.md has the measurements).
    candidates = max(lt.config.candidates, count, int(lt.index.live * lt.config.candidate_fraction))
    if where is not None and len(allowed := lt.index.allowed_ids(where)) <= candidates:
        ids = allowed  # a narrow filter: score every allowed row exactly
    else:
        ids = lt.index.nearest(query, candidates, where)
    return lt.similarities(ids.tolist(), query)


def text_plan(lt: LongTerm, query: str) -> tuple[str | None, bool]:
    """The FTS5 query for ``query`` (its rarest words that occur at all, stop words dropped), and
    whether it holds only a stop word (every word of the query was one: the rarest is kept)."""
    words = query_terms(query)
    if not words:
        return None, False
    frequency = lt.term_frequencies(words)
    present = sorted((w for w in words if frequency[w]), key=lambda w: frequency[w])
    total = max(lt.index.live, max(frequency.values(), default=0))
    limit = max(STOP_WORD_SHARE * total, STOP_WORD_MIN_DOCS)
    rare = [w for w in present if frequency[w] <= limit]
    return fts_query((rare or present[:1])[:MAX_TEXT_TERMS]), not rare and bool(present)


def text_match(lt: LongTerm, query: str) -> str | None:
    return text_plan(lt, query)[0]


def text_scores(lt: LongTerm, query: str, f: RecallFilters, pool: int) -> dict[int, float]:
    """BM25 of the ``pool`` best text matches, normalised so that the best is 1."""
    match, only_stop_words = text_plan(lt, query)
    if match is None:
        return {}
    # Ranking every memory a stop word is in costs O(memories): 400 ms at 500k (found by make soak,
    # whose searches' words were in every event, stalling the store for everyone). Such a query
    # scores its newest ``pool`` matches instead, which FTS5 reads in rowid order without ranking the rest.
    order = "f.rowid DESC" if only_stop_words else "bm25(memory_fts)"
    if f == RecallFilters():
        # Forgotten, archived and sensitive memories are not in FTS5: no join needed (it doubles the cost).
        rows = fetch_all(lt.conn, "SELECT f.rowid, -bm25(memory_fts) FROM memory_fts f WHERE memory_fts MATCH ? "  # noqa: S608
                                  f"ORDER BY {order} LIMIT ?", (match, pool))
    else:
        where, params = filter_sql(f)
        rows = fetch_all(lt.conn,
            f"SELECT f.rowid, -bm25(memory_fts) FROM memory_fts f JOIN memories m ON m.id = f.rowid "  # noqa: S608
            f"WHERE memory_fts MATCH ? AND {where} ORDER BY {order} LIMIT ?",
            (match, *params, pool))
    best = max((r[1] for r in rows), default=0.0)
    return {int(r[0]): (r[1] / best if best > 0 else 0.0) for r in rows}


def recall_memories(lt: LongTerm, request: RecallRequest) -> RecallResponse:
    started = time.perf_counter()
    query = lt.unit_vector(request.embedding) if request.embedding is not None else None
    similarity: dict[int, float] = {}
    text: dict[int, float] = {}
    pool = max(POOL_FACTOR * request.k, POOL_MIN)
    if query is not None and request.mode != "text":
        ids, scores = vector_scores(lt, query, request.k, index_filter(lt, request.filters))
        # Pure vector mode needs only the k best; hybrid keeps a wider pool for the other terms.
        wanted = request.k if request.mode == "vector" else pool
        if len(ids) > wanted:
            best = np.argpartition(-scores, wanted - 1)[:wanted]
            ids, scores = ids[best], scores[best]
        similarity = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    if request.query is not None and request.mode != "vector":
        text = text_scores(lt, request.query, request.filters, pool)
    if query is not None and request.mode == "hybrid" and (missing := [i for i in text if i not in similarity]):
        ids, scores = lt.similarities(missing, query)
        similarity.update(zip(ids.tolist(), scores.tolist(), strict=True))
    hits = rank(lt, request, similarity, text)
    return RecallResponse(hits=hits, mode=request.mode, took_ms=(time.perf_counter() - started) * 1e3)


def rank(lt: LongTerm, request: RecallRequest, similarity: dict[int, float], text: dict[int, float]) -> list[RecallHit]:
    cfg, now = lt.config, time.time()
    half_life = cfg.recency_half_life_days * 86_400
    rows = fetch_all(lt.conn, "SELECT id, created_at, importance FROM memories WHERE id IN "
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
    records = lt.records([s[1] for s in top])
    return [RecallHit(score=score, similarity=cos, text_score=bm25, recency=recency, record=records[memory_id])
            for score, memory_id, cos, bm25, recency in top if memory_id in records]
