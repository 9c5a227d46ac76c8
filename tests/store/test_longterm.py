"""Long-term memory on a real SQLite file: records, filters, hybrid and vector recall, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.ipc.memory import DocumentIn, MemoryIn, RecallFilters, RecallRequest
from appliance.store.db import MemoryDB
from appliance.store.errors import StoreError
from appliance.store.longterm import fts_query
from tests.store.conftest import DIM, open_db, unit


def test_remember_get_roundtrip(db: MemoryDB, rng: np.random.Generator) -> None:
    vector = unit(rng)
    memory_id = db.longterm.remember(MemoryIn(text="valve 3 opened", kind="event", source="valve-3",
                                              tags=["plant", "valves"], importance=0.9, metadata={"bar": 2.5},
                                              embedding=vector))
    record = db.longterm.get(memory_id)
    assert record is not None
    assert (record.text, record.kind, record.source, record.tags) == ("valve 3 opened", "event", "valve-3",
                                                                      ["plant", "valves"])
    assert record.metadata == {"bar": 2.5} and record.importance == 0.9
    assert np.allclose(record.embedding or [], vector, atol=1e-6)


def test_vector_recall_finds_the_nearest(db: MemoryDB, rng: np.random.Generator) -> None:
    vectors = [unit(rng) for _ in range(200)]
    ids = [db.longterm.remember(MemoryIn(text=f"m{i}", embedding=v)) for i, v in enumerate(vectors)]
    reply = db.longterm.recall(RecallRequest(embedding=vectors[17], k=3, mode="vector"))
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
        a = binary.longterm.recall(RecallRequest(embedding=query, k=10, mode="vector"))
        b = flat.longterm.recall(RecallRequest(embedding=query, k=10, mode="vector"))
        assert [h.record.id for h in a.hits] == [h.record.id for h in b.hits], q


def test_hybrid_prefers_text_match_among_equal_vectors(db: MemoryDB) -> None:
    same = [1.0] + [0.0] * (DIM - 1)
    db.longterm.remember(MemoryIn(text="the boiler is warm", embedding=same))
    target = db.longterm.remember(MemoryIn(text="compressor fault code E42", embedding=same))
    reply = db.longterm.recall(RecallRequest(query="compressor E42", embedding=same, k=2))
    assert reply.hits[0].record.id == target
    assert reply.hits[0].text_score == 1.0
    assert reply.hits[1].text_score is None


def test_recency_breaks_ties(db: MemoryDB) -> None:
    same = [1.0] + [0.0] * (DIM - 1)
    db.longterm.remember(MemoryIn(text="old", embedding=same, created_at=time.time() - 90 * 86_400))
    new = db.longterm.remember(MemoryIn(text="new", embedding=same))
    reply = db.longterm.recall(RecallRequest(embedding=same, k=2))
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
        hits = db.longterm.recall(request).hits
        assert hits, request.mode
        for hit in hits:
            r = hit.record
            assert r.kind == "fact" and r.source == "door-0" and "night" in r.tags and r.created_at >= now - 40 * 3600
    none = RecallFilters(sources=["no-such-device"])
    assert db.longterm.recall(RecallRequest(embedding=unit(rng), filters=none)).hits == []


def test_wrong_dimension_names_the_expected_one(db: MemoryDB) -> None:
    with pytest.raises(StoreError, match=f"3 dimensions; this store expects {DIM}"):
        db.longterm.remember(MemoryIn(text="x", embedding=[0.1, 0.2, 0.3]))
    with pytest.raises(StoreError, match="zero or non-finite length"):
        db.longterm.remember(MemoryIn(text="x", embedding=[0.0] * DIM))
    assert db.stats().memories == 0


@pytest.mark.parametrize("fields", [
    {"text": "x" * 70_000},
    {"text": ""},
    {"text": "x", "embedding": [float("nan")] * DIM},
    {"text": "x", "embedding": [float("inf")] * DIM},
    {"text": "x", "kind": "gossip"},
    {"text": "x", "tags": ["a b"]},
    {"text": "x", "tags": ["'; DROP TABLE memories; --"]},
    {"text": "x", "importance": 7},
    {"text": "x", "colour": "red"},
])
def test_bad_memories_are_refused_before_the_store(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MemoryIn.model_validate(fields)


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
    hits = db.longterm.recall(RecallRequest(query=hostile, k=5, filters=RecallFilters(sources=["' OR '1'='1"]))).hits
    assert [h.record.id for h in hits] == [memory_id]
    assert db.stats().memories == 2
    assert fts_query('a" OR b') == '"a" OR "OR" OR "b"'  # operators become plain words
    assert fts_query("*** ---") is None


def test_forget_erases_content_and_keeps_a_tombstone(db: MemoryDB, rng: np.random.Generator) -> None:
    vector = unit(rng)
    memory_id = db.longterm.remember(MemoryIn(text="the alarm code is 4711", embedding=vector))
    assert db.longterm.forget(memory_id) is True
    assert db.longterm.forget(memory_id) is False
    assert db.longterm.forget(999) is None
    assert db.longterm.get(memory_id) is None
    assert db.longterm.recall(RecallRequest(query="alarm code", embedding=vector)).hits == []
    assert db.stats().forgotten == 1
    assert db.longterm.purge_due
    db.longterm.purge()
    db.checkpoint()
    assert b"4711" not in db.path.read_bytes()


def test_index_survives_reopen(tmp_path: Path, rng: np.random.Generator) -> None:
    first = open_db(tmp_path)
    vectors = [unit(rng) for _ in range(50)]
    ids = [first.longterm.remember(MemoryIn(text=f"m{i}", embedding=v)) for i, v in enumerate(vectors)]
    first.longterm.forget(ids[3])
    first.close()
    again = open_db(tmp_path)
    assert again.longterm.index.live == 49
    assert again.longterm.recall(RecallRequest(embedding=vectors[7], k=1, mode="vector")).hits[0].record.id == ids[7]


def test_ingest_replaces_the_old_chunks(db: MemoryDB, rng: np.random.Generator) -> None:
    first = DocumentIn(path="/docs/manual.md", chunks=["pump manual part one", "pump manual part two"],
                       embeddings=[unit(rng), unit(rng)])
    assert db.longterm.ingest(first).chunks == 2
    second = DocumentIn(path="/docs/manual.md", chunks=["revised manual"], embeddings=[unit(rng)])
    stored = db.longterm.ingest(second)
    assert (stored.chunks, stored.replaced) == (1, 2)
    hits = db.longterm.recall(RecallRequest(query="manual", k=10, mode="text")).hits
    assert [h.record.text for h in hits] == ["revised manual"]
    assert hits[0].record.kind == "document"


def test_ingest_batches_append_after_the_first(db: MemoryDB) -> None:
    db.longterm.ingest(DocumentIn(path="/big.md", chunks=["part 0", "part 1"]))
    db.longterm.ingest(DocumentIn(path="/big.md", first_chunk=2, chunks=["part 2"]))
    rows = db.conn.execute("SELECT chunk, text FROM memories WHERE document = '/big.md' ORDER BY chunk").fetchall()
    assert rows == [(0, "part 0"), (1, "part 1"), (2, "part 2")]
    with pytest.raises(StoreError, match="more than 4096 chunks"):
        db.longterm.ingest(DocumentIn(path="/big.md", first_chunk=4095, chunks=["a", "b"]))
    with pytest.raises(ValidationError):
        DocumentIn(path="/big.md", chunks=["c"] * 65)


def test_ingest_with_a_bad_embedding_writes_nothing(db: MemoryDB, rng: np.random.Generator) -> None:
    doc = DocumentIn(path="/d.txt", chunks=["a", "b"], embeddings=[unit(rng), [1.0, 2.0]])
    with pytest.raises(StoreError, match=r"embeddings\[1\]: embedding has 2 dimensions"):
        db.longterm.ingest(doc)
    assert db.stats().memories == 0
    with pytest.raises(ValidationError, match="2 embeddings for 1 chunks"):
        DocumentIn(path="/d.txt", chunks=["a"], embeddings=[unit(rng), unit(rng)])


def test_backfill_gives_vectors_to_memories_stored_without(db: MemoryDB, rng: np.random.Generator) -> None:
    plain = db.longterm.remember(MemoryIn(text="stored while the engine was down"))
    secret = db.longterm.remember(MemoryIn(text="sealed and unembedded", sensitive=True))
    gone = db.longterm.remember(MemoryIn(text="forgotten"))
    db.longterm.forget(gone)
    db.longterm.remember(MemoryIn(text="has one", embedding=unit(rng)))
    assert db.longterm.unembedded(10) == [(plain, "stored while the engine was down"),
                                          (secret, "sealed and unembedded")]
    with pytest.raises(StoreError, match=r"embeddings\[1\]: embedding has 2 dimensions"):
        db.longterm.set_vectors([plain, secret], [unit(rng), [1.0, 0.0]])
    vector = unit(rng)
    assert db.longterm.set_vectors([plain, secret, gone], [vector, unit(rng), unit(rng)]) == 2
    assert db.longterm.unembedded(10) == []
    hit = db.longterm.recall(RecallRequest(embedding=vector, k=1, mode="vector")).hits[0]
    assert hit.record.id == plain
    assert db.longterm.set_vectors([plain], [unit(rng)]) == 0  # already embedded: left alone


def test_stop_words_do_not_drown_the_rare_word(db: MemoryDB) -> None:
    from appliance.store import longterm

    with db.longterm.transaction():
        for i in range(600):
            db.longterm.insert(MemoryIn(text=f"the door {i} is the door"))
        target = db.longterm.insert(MemoryIn(text="the compressor is the noisy one"))
    assert db.longterm._text_match("the compressor") == '"compressor"'
    assert db.longterm._text_match("the the") == '"the"'  # only stop words: keep the rarest
    assert db.longterm._text_match("zebra") is None  # in no memory at all
    hits = db.longterm.recall(RecallRequest(query="is the compressor", k=1, mode="text")).hits
    assert hits[0].record.id == target
    assert longterm.STOP_WORD_MIN_DOCS <= 600
