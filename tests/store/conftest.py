"""A real memory file in a temporary directory, with small vectors so tests stay quick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.config import MemoryConfig
from appliance.store.db import MemoryDB, connect
from appliance.store.schema import migration_sql

DIM = 16


def unit(rng: np.random.Generator, dim: int = DIM) -> list[float]:
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


def open_db(folder: Path, **settings: object) -> MemoryDB:
    config = MemoryConfig.model_validate({"vector_dim": DIM, **settings})
    return MemoryDB(folder / "memory.db", config, folder / "keys" / "memory.key")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MemoryDB]:
    memory = open_db(tmp_path)
    yield memory
    memory.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def file_at_version_9(path: Path, count: int, dim: int = DIM) -> None:
    """A memory file as the release before schema 10 left it (unicode61's full-text index), with
    ``count`` memories that have vectors: meter readings, and at id 4321 a Chinese alarm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    for target in range(1, 10):
        with conn:
            conn.execute(migration_sql(target, dim))
    vector = np.eye(dim, dtype=np.float32)[2].tobytes()
    with conn:
        for n in range(1, count + 1):
            text = "冷库的温度报警" if n == 4321 else f"meter {n} reads {n * 3} kWh 电表读数"
            conn.execute("INSERT INTO memories(id, text, kind, source, tags, metadata, importance, created_at) "
                         "VALUES (?, ?, 'event', 'meter', '[]', '{}', 0.5, ?)", (n, text, 1000.0 + n))
            conn.execute("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", (n, text))
            conn.execute("INSERT INTO vectors(id, embedding) VALUES (?, ?)", (n, vector))
    conn.close()
