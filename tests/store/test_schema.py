"""Migrations run forward from every earlier schema version, keeping the data."""

from __future__ import annotations

from pathlib import Path

import apsw
import numpy as np
import pytest
import sqlite_vec

from appliance.protocol.store import RecallRequest
from appliance.store.db import connect
from appliance.store.errors import StoreError
from appliance.store.schema import SCHEMA_VERSION, migration_sql
from tests.store.conftest import DIM, open_db


def _file_at(path: Path, version: int) -> apsw.Connection:
    conn = connect(path)
    for target in range(1, version + 1):
        with conn:
            conn.execute(migration_sql(target, DIM))
    return conn


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_earlier_version_opens_and_migrates(tmp_path: Path, version: int) -> None:
    folder = tmp_path / "memory"
    folder.mkdir()
    conn = _file_at(folder / "memory.db", version)
    vector = np.eye(DIM, dtype=np.float32)[3]
    if version == 1:
        with conn:
            conn.execute("INSERT INTO memories VALUES (7, 'the gate closed', 'event', 'gate-1', '{\"a\": 1}', 123.0)")
            conn.execute("INSERT INTO memory_vectors(rowid, embedding) VALUES (7, ?)",
                         (sqlite_vec.serialize_float32(vector.tolist()),))
    conn.close()
    db = open_db(folder)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if version == 1:
        record = db.longterm.get(7)
        assert record is not None and record.text == "the gate closed" and record.metadata == {"a": 1}
        # Schema 10 rebuilds the full-text index in the background: found by its vector meanwhile.
        hits = db.recall(RecallRequest(query="gate", embedding=vector.tolist(), k=1)).hits
        assert hits[0].record.id == 7 and hits[0].text_score is None
        assert db.longterm.text_rebuild is not None and db.longterm.text_rebuild.total == 1
        while db.index_text():
            pass
        hits = db.recall(RecallRequest(query="gate", embedding=vector.tolist(), k=1)).hits
        assert hits[0].record.id == 7 and hits[0].text_score == 1.0
        assert hits[0].similarity == pytest.approx(1.0)
    db.close()


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "memory.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this release"):
        open_db(tmp_path)


def test_a_different_dimension_is_refused(tmp_path: Path) -> None:
    open_db(tmp_path).close()
    with pytest.raises(StoreError, match=r"holds 16-dim vectors but memory\.vector_dim is 32"):
        open_db(tmp_path, vector_dim=32)
