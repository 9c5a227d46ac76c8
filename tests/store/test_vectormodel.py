"""The file records which model made its vectors; another model re-embeds, never mixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.config import MemoryConfig
from appliance.protocol.store import MemoryIn, RecallRequest
from appliance.store.db import MemoryDB
from appliance.store.errors import StoreError
from tests.store.conftest import DIM, unit


def open_as(folder: Path, model: str | None, dim: int = DIM) -> MemoryDB:
    config = MemoryConfig.model_validate({"vector_dim": dim})
    return MemoryDB(folder / "memory.db", config, folder / "keys" / "memory.key", vector_model=model)


def meta(db: MemoryDB, key: str) -> str | None:
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def test_a_new_model_drops_the_old_vectors_and_the_backfill_fills_them_again(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    db = open_as(tmp_path, "model-a")
    ids = [db.longterm.remember(MemoryIn(text=f"冷库 reading {n}", embedding=unit(rng))) for n in range(10)]
    db.longterm.forget(ids[9])
    assert meta(db, "vector_model") == "model-a" and db.longterm.reembed is None
    db.close()

    db = open_as(tmp_path, "model-b", dim=24)  # another model, another dimension
    assert db.stats().vectors == 0 and meta(db, "vector_model") == "model-b" and meta(db, "vector_dim") == "24"
    reembed = db.longterm.reembed
    assert reembed is not None and (reembed.total, reembed.done) == (9, 0)
    assert "re-embedding for model-b: 0 of 9 memories (0 %)" in str(reembed.describe())
    question = unit(rng, 24)
    assert db.recall(RecallRequest(query="冷库", embedding=question, k=3, mode="vector")).hits == []  # none of a
    assert len(db.recall(RecallRequest(query="冷库", embedding=question, k=3)).hits) == 3  # text meanwhile
    with pytest.raises(StoreError, match="24"):
        db.longterm.remember(MemoryIn(text="old-sized", embedding=unit(rng)))  # a 16-dim vector is refused
    db.close()

    db = open_as(tmp_path, "model-b", dim=24)  # a restart half-way keeps the count
    waiting = db.longterm.unembedded(100)
    assert len(waiting) == 9 and db.longterm.reembed is not None
    db.longterm.set_vectors([i for i, _ in waiting[:4]], [unit(rng, 24) for _ in range(4)])
    assert db.longterm.reembed is not None and db.longterm.reembed.done == 4
    db.longterm.set_vectors([i for i, _ in waiting[4:]], [unit(rng, 24) for _ in range(5)])
    assert db.longterm.reembed is None and meta(db, "reembed") is None
    assert len(db.recall(RecallRequest(embedding=question, k=20, mode="vector")).hits) == 9
    db.close()


def test_a_file_from_before_the_record_is_adopted_when_its_dimension_fits(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    db = open_as(tmp_path, None)  # as a tool (or the release before) opens it: nothing recorded
    db.longterm.remember(MemoryIn(text="kept", embedding=unit(rng)))
    assert meta(db, "vector_model") is None
    db.close()
    db = open_as(tmp_path, "gguf:all-minilm-l6-v2.gguf")
    assert db.stats().vectors == 1 and db.longterm.reembed is None
    assert meta(db, "vector_model_adopted") == "gguf:all-minilm-l6-v2.gguf"
    db.close()
    with pytest.raises(StoreError, match="holds 16-dim vectors"):
        open_as(tmp_path, None, dim=24)  # tools still refuse another dimension rather than drop vectors


def test_an_archived_vector_of_another_model_does_not_come_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    db = open_as(tmp_path, "model-a", dim=DIM)
    with db.longterm.transaction():
        old = [db.longterm.insert(MemoryIn(text=f"old event {n}", embedding=unit(rng)), now=1.0)
               for n in range(12)]
    list(db.archive.steps(older_than_s=60))
    assert db.stats().archived == 12
    db.close()

    db = open_as(tmp_path, "model-b", dim=24)
    assert db.archive.restore(old[:3]) == 3
    assert all(db.longterm.get(i) is not None for i in old[:3])
    assert db.stats().vectors == 0  # restored without model a's vectors: the backfill embeds them
    assert {i for i, _ in db.longterm.unembedded(10)} == set(old[:3])
    with db.longterm.transaction():
        new = [db.longterm.insert(MemoryIn(text=f"new event {n}", embedding=unit(rng, 24)), now=2.0)
               for n in range(12)]
    list(db.archive.steps(older_than_s=60))  # archived under model b, restored under model b: kept
    assert db.archive.restore(new[:2]) == 2 and db.stats().vectors == 2
    db.close()


def test_an_empty_file_changes_model_with_nothing_to_re_embed(tmp_path: Path) -> None:
    open_as(tmp_path, "model-a").close()
    db = open_as(tmp_path, "model-b", dim=24)
    assert db.longterm.reembed is None and meta(db, "reembed") is None and meta(db, "vector_model") == "model-b"
    db.close()
