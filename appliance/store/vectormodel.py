"""Which model made the file's vectors; changing the model re-embeds the memory in the background.

Vectors of two models live in two unrelated spaces: a cosine between them means nothing. The
policy, applied when the store opens the file (db.py) and whenever vectors come and go:

1. ``meta.vector_model`` names the model whose vectors the file holds (config.embedding_identity:
   the packaged encoder's name, or gguf:<file>), ``meta.vector_dim`` their dimension.
2. A file from before this record existed is taken to hold the configured model's vectors if
   their dimension matches (that model made them, as far as anyone can know), and that model is
   remembered as the one its older archive lines were made with (``vector_model_adopted``).
3. When the configured model or dimension differs, every vector is deleted in one transaction and
   the meta rows name the new model; ``meta.reembed`` keeps when and how many memories wait. The
   agent's backfill embeds memories without vectors through the engine (the one place
   embeddings come from), oldest first; meanwhile recall compares questions only with vectors of
   the new model and finds the rest by text. The store's health shows the progress.
4. An archive line carries the model of its vector; a memory restored under another model (or
   an untagged line from before, under another model than the adopted one) comes back without
   its vector, and the backfill gives it one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import apsw

from appliance.phrases import Phrase
from appliance.store.sql import fetch_one, integer

log = logging.getLogger("appliance.store")


@dataclass
class Reembed:
    model: str
    total: int
    since: float
    done: int = 0

    def describe(self) -> Phrase:
        share = 100 * min(self.done, self.total) / self.total if self.total else 100.0
        return Phrase("store.reembed", model=self.model, done=f"{min(self.done, self.total):,}",
                      total=f"{self.total:,}", share=f"{share:.0f}")


def _meta(conn: apsw.Connection, key: str) -> str | None:
    row = fetch_one(conn, "SELECT value FROM meta WHERE key = ?", (key,))
    return str(row[0]) if row else None


def _set(conn: apsw.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def reconcile(conn: apsw.Connection, dim: int, model: str) -> Reembed | None:
    """Rules 1-3 at open: the re-embedding under way (begun now or before), or None."""
    stored_model, stored_dim = _meta(conn, "vector_model"), integer(conn, "SELECT value FROM meta WHERE key = "
                                                                          "'vector_dim'")
    if stored_model is None and stored_dim == dim:
        with conn:
            _set(conn, "vector_model", model)
            _set(conn, "vector_model_adopted", model)
        return None
    if stored_model != model or stored_dim != dim:
        dropped = integer(conn, "SELECT count(*) FROM vectors")
        with conn:
            conn.execute("DELETE FROM vectors")
            _set(conn, "vector_model", model)
            _set(conn, "vector_dim", str(dim))
            waiting = integer(conn, "SELECT count(*) FROM memories WHERE forgotten_at IS NULL")
            if waiting:
                _set(conn, "reembed", json.dumps({"model": model, "total": waiting, "since": time.time()}))
        log.warning("the embedding model is now %s (%d dims; the file held %s, %d dims): its %d vectors were "
                    "dropped and its %d memories are re-embedded in the background", model, dim,
                    stored_model or "an unrecorded model", stored_dim, dropped, waiting)
    state = _meta(conn, "reembed")
    if state is None:
        return None
    recorded = json.loads(state)
    reembed = Reembed(model=str(recorded["model"]), total=int(recorded["total"]), since=float(recorded["since"]),
                      done=integer(conn, "SELECT count(*) FROM vectors"))
    if fetch_one(conn, "SELECT 1 FROM memories m WHERE forgotten_at IS NULL AND NOT EXISTS "
                       "(SELECT 1 FROM vectors v WHERE v.id = m.id) LIMIT 1") is None:
        with conn:  # finished while the store was last running, or everything was forgotten since
            finish(conn, reembed)
        return None
    return reembed


def finish(conn: apsw.Connection, reembed: Reembed) -> None:
    """Every memory has a vector of the new model again: the record goes (in the caller's transaction)."""
    conn.execute("DELETE FROM meta WHERE key = 'reembed'")
    log.info("re-embedded %d memories for %s in %.0f s", reembed.done, reembed.model, time.time() - reembed.since)


def vector_usable(conn: apsw.Connection, line_model: str | None, current: str) -> bool:
    """Rule 4: whether an archived vector made by ``line_model`` (None: untagged) may come back."""
    return (line_model or _meta(conn, "vector_model_adopted")) == current
