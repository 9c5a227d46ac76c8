"""The full-text index rebuilt in the background after a migration changed its tokenizer.

Schema 10 (store/words.py's ``bilingual`` tokenizer) drops the old index and leaves in ``meta``
the range of memory ids to index again: ``{"next": last id done, "until": highest id then}``.
The store indexes a batch at a time, each batch in one transaction with the new cursor, so a
crash or a stop loses at most the batch in flight and the next start resumes at the cursor.
Meanwhile search stays up: vectors are untouched, text search finds what is indexed so far and
every memory written since the migration (ids above ``until`` are indexed as they are written).
A memory written back into the range meanwhile (an archive restore keeps its id) is left to the
rebuild, so it is never indexed twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import apsw

from appliance.phrases import Phrase
from appliance.store.sql import fetch_all, fetch_one

META_KEY = "fts_rebuild"
BATCH = 2000


@dataclass
class Rebuild:
    next_id: int
    until: int
    total: int  # memories to index when this process started
    done: int = 0
    started: float = 0.0

    def covers(self, memory_id: int) -> bool:
        """Whether ``memory_id`` is the rebuild's to index (not yet reached)."""
        return self.next_id < memory_id <= self.until

    def describe(self) -> Phrase:
        share = 100 * self.done / self.total if self.total else 100.0
        return Phrase("store.text_rebuild", done=f"{self.done:,}", total=f"{self.total:,}", share=f"{share:.0f}")


_INDEXED = "forgotten_at IS NULL AND sealed IS NULL AND text != ''"


def pending(conn: apsw.Connection) -> Rebuild | None:
    """The rebuild this file still needs, or None."""
    row = fetch_one(conn, "SELECT value FROM meta WHERE key = ?", (META_KEY,))
    if row is None:
        return None
    cursor = json.loads(row[0])
    next_id, until = int(cursor["next"]), int(cursor["until"])
    left = fetch_one(conn, f"SELECT count(*) FROM memories WHERE id > ? AND id <= ? AND {_INDEXED}",  # noqa: S608
                     (next_id, until))
    return Rebuild(next_id=next_id, until=until, total=int(left[0]) if left else 0, started=time.monotonic())


def step(conn: apsw.Connection, rebuild: Rebuild, batch: int = BATCH) -> bool:
    """Index the next batch and move the cursor in the same transaction; whether more is left."""
    with conn:
        rows = fetch_all(conn, f"SELECT id, text FROM memories WHERE id > ? AND id <= ? AND {_INDEXED} "  # noqa: S608
                               "ORDER BY id LIMIT ?", (rebuild.next_id, rebuild.until, batch))
        conn.executemany("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", rows)
        finished = len(rows) < batch
        if finished:
            conn.execute("DELETE FROM meta WHERE key = ?", (META_KEY,))
        else:
            conn.execute("UPDATE meta SET value = ? WHERE key = ?",
                         (json.dumps({"next": rows[-1][0], "until": rebuild.until}), META_KEY))
    rebuild.done += len(rows)
    rebuild.next_id = rebuild.until if finished else int(rows[-1][0])
    return not finished
