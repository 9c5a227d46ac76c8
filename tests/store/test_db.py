"""The memory database on a real SQLite file with sqlite-vec loaded."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.ipc.messages import MemoryIn
from appliance.store.db import MemoryDB, StoreError


def unit(dim: int, rng: random.Random) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_remember_get_and_nearest(tmp_path: Path) -> None:
    rng = random.Random(0)
    db = MemoryDB(tmp_path / "memory.db", 16)
    vectors = [unit(16, rng) for _ in range(50)]
    ids = [db.remember(MemoryIn(text=f"m{i}", embedding=v, metadata={"i": i})) for i, v in enumerate(vectors)]
    record = db.get(ids[7])
    assert record is not None and record.text == "m7" and record.metadata == {"i": 7}
    assert record.embedding is not None and math.isclose(record.embedding[0], vectors[7][0], rel_tol=1e-6)
    hits = db.search(vectors[7], 3)
    assert hits[0][1].id == ids[7] and hits[0][0] < 1e-5
    assert db.get(10_000) is None
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_wrong_dimension_names_the_expected_one(tmp_path: Path) -> None:
    db = MemoryDB(tmp_path / "memory.db", 16)
    with pytest.raises(StoreError, match="has 3 dimensions; this store expects 16"):
        db.remember(MemoryIn(text="x", embedding=[0.1, 0.2, 0.3]))
    with pytest.raises(StoreError, match="expects 16"):
        db.search([1.0], 1)
    assert db.count() == 0  # nothing written


def test_reopening_with_another_dimension_is_refused(tmp_path: Path) -> None:
    MemoryDB(tmp_path / "memory.db", 16).close()
    with pytest.raises(StoreError, match=r"holds 16-dim vectors but memory\.vector_dim is 32"):
        MemoryDB(tmp_path / "memory.db", 32)


def test_hostile_text_is_stored_literally(tmp_path: Path) -> None:
    db = MemoryDB(tmp_path / "memory.db", 8)
    text = "x'); DROP TABLE memories; --"
    memory_id = db.remember(MemoryIn(text=text, source="'; DELETE FROM meta; --"))
    assert (db.get(memory_id) or pytest.fail()).text == text
    assert db.count() == 1


@pytest.mark.parametrize("fields", [
    {"text": ""}, {"text": "x" * 70_000}, {"text": "x", "embedding": [float("nan")]},
    {"text": "x", "embedding": [float("inf"), 1.0]}, {"text": "x", "embedding": []},
    {"text": "x", "kind": "secret"}, {"text": "x", "bogus": 1},
])
def test_bad_memories_are_refused_before_the_database(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MemoryIn.model_validate(fields)
