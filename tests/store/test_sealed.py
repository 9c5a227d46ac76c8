"""The associated data of every sealed column: its Python and SQL spellings agree on real rows."""

from __future__ import annotations

import time

from appliance.protocol.store import MemoryIn, RingEntryIn
from appliance.store.db import MemoryDB
from appliance.store.sealed import SEALED_COLUMNS, SealedColumn
from appliance.store.sql import fetch_all


def sql_and_python_contexts(db: MemoryDB, column: SealedColumn) -> list[tuple[str, str]]:
    rows = fetch_all(db.conn, f"SELECT {column.context_sql}, {', '.join(column.key_columns)} "
                              f"FROM {column.table} WHERE sealed IS NOT NULL")
    return [(sql, column.context(*key)) for sql, *key in rows]


def test_every_sealed_table_spells_its_context_once(db: MemoryDB) -> None:
    old = time.time() - 90 * 86_400
    for i in range(300):  # old enough to be archived: a segment and its dictionary get sealed
        db.longterm.remember(MemoryIn(text=f"reading {i} of sensor-{i % 3}", source=f"sensor-{i % 3}",
                                      created_at=old + i))
    db.longterm.remember(MemoryIn(text="the gate code is 4711", sensitive=True, pinned=True))
    db.ring.append(RingEntryIn(conversation="door-1", text="open the dock door"))
    list(db.archive.steps(30 * 86_400))
    for column in SEALED_COLUMNS:
        pairs = sql_and_python_contexts(db, column)
        assert pairs, f"no sealed row in {column.table}"
        assert all(sql == python for sql, python in pairs), (column.table, pairs[:3])
        sealed, context = fetch_all(db.conn, f"SELECT sealed, {column.context_sql} FROM {column.table} "
                                             "WHERE sealed IS NOT NULL LIMIT 1")[0]
        assert db.sealer.open(sealed, context)  # what the rows were sealed under
