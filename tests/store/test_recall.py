"""Recall on a real SQLite file: vector, text and hybrid ranking, filters, hostile queries."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.protocol.store import MemoryIn, RecallFilters, RecallRequest
from appliance.store import recall
from appliance.store.db import MemoryDB
from appliance.store.recall import fts_query, text_match
from appliance.store.words import query_terms
from tests.store.conftest import DIM, open_db, unit


def test_vector_recall_finds_the_nearest(db: MemoryDB, rng: np.random.Generator) -> None:
    vectors = [unit(rng) for _ in range(200)]
    ids = [db.longterm.remember(MemoryIn(text=f"m{i}", embedding=v)) for i, v in enumerate(vectors)]
    reply = db.recall(RecallRequest(embedding=vectors[17], k=3, mode="vector"))
    assert reply.hits[0].record.id == ids[17]
    assert reply.hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in reply.hits] == sorted((h.score for h in reply.hits), reverse=True)


def test_binary_index_matches_exact_scan(tmp_path: Path, rng: np.random.Generator) -> None:
    """With candidates >= the store size the binary path must equal the exact float scan."""
    binary = open_db(tmp_path / "b", candidates=300)
    flat = open_db(tmp_path / "f", index_type="flat")
    vectors = [unit(rng) for _ in range(300)]
    for i, v in enumerate(vectors):
        for store in (binary, flat):
            store.longterm.remember(MemoryIn(text=f"m{i}", embedding=v))
    for q in range(10):
        query = unit(rng)
        a = binary.recall(RecallRequest(embedding=query, k=10, mode="vector"))
        b = flat.recall(RecallRequest(embedding=query, k=10, mode="vector"))
        assert [h.record.id for h in a.hits] == [h.record.id for h in b.hits], q


def test_hybrid_prefers_text_match_among_equal_vectors(db: MemoryDB) -> None:
    same = [1.0] + [0.0] * (DIM - 1)
    db.longterm.remember(MemoryIn(text="the boiler is warm", embedding=same))
    target = db.longterm.remember(MemoryIn(text="compressor fault code E42", embedding=same))
    reply = db.recall(RecallRequest(query="compressor E42", embedding=same, k=2))
    assert reply.hits[0].record.id == target
    assert reply.hits[0].text_score == 1.0
    assert reply.hits[1].text_score is None


def test_recency_breaks_ties(db: MemoryDB) -> None:
    same = [1.0] + [0.0] * (DIM - 1)
    db.longterm.remember(MemoryIn(text="old", embedding=same, created_at=time.time() - 90 * 86_400))
    new = db.longterm.remember(MemoryIn(text="new", embedding=same))
    reply = db.recall(RecallRequest(embedding=same, k=2))
    assert reply.hits[0].record.id == new
    assert reply.hits[0].recency > 0.99 > reply.hits[1].recency


def test_filters_apply_to_vector_and_text(db: MemoryDB, rng: np.random.Generator) -> None:
    now = time.time()
    for i in range(60):
        db.longterm.remember(MemoryIn(text=f"door event {i}", kind="event" if i % 2 else "fact",
                                      source=f"door-{i % 3}", tags=["night"] if i % 5 == 0 else [],
                                      created_at=now - i * 3600, embedding=unit(rng)))
    filters = RecallFilters(kinds=["fact"], sources=["door-0"], since=now - 40 * 3600, tags=["night"])
    for request in (RecallRequest(embedding=unit(rng), k=50, filters=filters, mode="vector"),
                    RecallRequest(query="door", k=50, filters=filters, mode="text"),
                    RecallRequest(query="door", embedding=unit(rng), k=50, filters=filters)):
        hits = db.recall(request).hits
        assert hits, request.mode
        for hit in hits:
            r = hit.record
            assert r.kind == "fact" and r.source == "door-0" and "night" in r.tags and r.created_at >= now - 40 * 3600
    none = RecallFilters(sources=["no-such-device"])
    assert db.recall(RecallRequest(embedding=unit(rng), filters=none)).hits == []


@pytest.mark.parametrize("filters", [
    {"colour": "red"},
    {"kinds": ["gossip"]},
    {"since": 10, "until": 5},
    {"tags": ["x' OR 1=1 --"]},
    {"sources": ["x" * 300]},
])
def test_bad_filters_are_refused(filters: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RecallRequest.model_validate({"query": "x", "filters": filters})


def test_injection_attempts_are_just_text(db: MemoryDB, rng: np.random.Generator) -> None:
    hostile = "'; DELETE FROM memories; -- \" OR 1=1 NEAR(a b) * ^col:x"
    memory_id = db.longterm.remember(MemoryIn(text=hostile, source="' OR '1'='1", embedding=unit(rng)))
    db.longterm.remember(MemoryIn(text="innocent", source="s", embedding=unit(rng)))
    assert db.longterm.get(memory_id).text == hostile  # type: ignore[union-attr]
    hits = db.recall(RecallRequest(query=hostile, k=5, filters=RecallFilters(sources=["' OR '1'='1"]))).hits
    assert [h.record.id for h in hits] == [memory_id]
    assert db.stats().memories == 2
    assert fts_query(query_terms('a" OR b')) == '"a" OR "or" OR "b"'  # operators become plain words
    assert fts_query(query_terms("*** ---")) is None


def test_stop_words_do_not_drown_the_rare_word(db: MemoryDB) -> None:
    with db.longterm.transaction():
        for i in range(600):
            db.longterm.insert(MemoryIn(text=f"the door {i} is the door"))
        target = db.longterm.insert(MemoryIn(text="the compressor is the noisy one"))
    assert text_match(db.longterm, "the compressor") == '"compressor"'
    assert text_match(db.longterm, "the the") == '"the"'  # only stop words: keep the rarest
    assert text_match(db.longterm, "zebra") is None  # in no memory at all
    hits = db.recall(RecallRequest(query="is the compressor", k=1, mode="text")).hits
    assert hits[0].record.id == target
    assert recall.STOP_WORD_MIN_DOCS <= 600


def test_a_query_of_stop_words_only_ranks_the_newest_matches(db: MemoryDB) -> None:
    """Ranking all of a stop word's memories is O(memories) (400 ms at 500k in make soak): only its
    newest matches are scored, so the newest memories come back, not an arbitrary ranking of all."""
    with db.longterm.transaction():
        ids = [db.longterm.insert(MemoryIn(text=f"the door {i} is the door")) for i in range(700)]
    plan = recall.text_plan(db.longterm, "the is")
    assert plan == ('"is"', True) or plan == ('"the"', True), plan
    hits = db.recall(RecallRequest(query="the is", k=5, mode="text")).hits
    assert {h.record.id for h in hits} <= set(ids[-recall.POOL_MIN:])
    assert recall.text_plan(db.longterm, "door 5") == ('"5"', False)


def test_a_word_searched_before_it_is_stored_is_found_once_it_is(db: MemoryDB) -> None:
    """Someone searches for an event as it happens: the search just before it must not hide it after."""
    query = RecallRequest(query="probe7f3a", mode="text", k=1)
    assert db.recall(query).hits == []
    stored = db.longterm.remember(MemoryIn(text='{"type": "probe7f3a", "value": 1}'))
    assert [h.record.id for h in db.recall(query).hits] == [stored]
