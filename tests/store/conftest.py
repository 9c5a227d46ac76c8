"""A real memory file in a temporary directory, with small vectors so tests stay quick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.config import MemoryConfig
from appliance.store.db import MemoryDB

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
