"""Long-term memory on a real SQLite file: records, filters, hybrid and vector recall, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.protocol.store import DocumentIn, MemoryIn, RecallRequest
from appliance.store.db import MemoryDB
from appliance.store.errors import StoreError
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


def test_forget_erases_content_and_keeps_a_tombstone(db: MemoryDB, rng: np.random.Generator) -> None:
    vector = unit(rng)
    memory_id = db.longterm.remember(MemoryIn(text="the alarm code is 4711", embedding=vector))
    assert db.longterm.forget(memory_id) is True
    assert db.longterm.forget(memory_id) is False
    assert db.longterm.forget(999) is None
    assert db.longterm.get(memory_id) is None
    assert db.recall(RecallRequest(query="alarm code", embedding=vector)).hits == []
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
    assert again.recall(RecallRequest(embedding=vectors[7], k=1, mode="vector")).hits[0].record.id == ids[7]


def test_ingest_replaces_the_old_chunks(db: MemoryDB, rng: np.random.Generator) -> None:
    first = DocumentIn(path="/docs/manual.md", chunks=["pump manual part one", "pump manual part two"],
                       embeddings=[unit(rng), unit(rng)])
    assert db.longterm.ingest(first).chunks == 2
    second = DocumentIn(path="/docs/manual.md", chunks=["revised manual"], embeddings=[unit(rng)])
    stored = db.longterm.ingest(second)
    assert (stored.chunks, stored.replaced) == (1, 2)
    hits = db.recall(RecallRequest(query="manual", k=10, mode="text")).hits
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


def test_the_backfill_takes_a_flooding_devices_events_last(db: MemoryDB) -> None:
    flood = [db.longterm.remember(MemoryIn(text=f"burst {i}", kind="event", source="backlog",
                                           metadata={"flood": True})) for i in range(3)]
    calm = db.longterm.remember(MemoryIn(text="door opened", kind="event", source="door"))
    note = db.longterm.remember(MemoryIn(text="a note"))
    assert [i for i, _ in db.longterm.unembedded(2)] == [calm, note]
    assert [i for i, _ in db.longterm.unembedded(4)] == [calm, note, *flood[:2]]


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
    hit = db.recall(RecallRequest(embedding=vector, k=1, mode="vector")).hits[0]
    assert hit.record.id == plain
    assert db.longterm.set_vectors([plain], [unit(rng)]) == 0  # already embedded: left alone
