"""The site in the memory file: entities announced by discovery, their current states and history.

Invariants:
- An announcement replaces what its key announced before (a renamed entity keeps no stale row);
  a withdrawn key's entity is removed, its history kept until it ages out.
- A batch of states is one transaction: each entity's state, attributes and availability are
  merged into its row; a change of state or attributes adds a history row; a change of state adds
  an event memory saying it in words ("Hall fan turned on"), kind event, source the entity id.
  A state that did not change (a retained payload seen again, a redelivery) changes nothing.
- History is kept site.history_days (pruned with the other periodic pruning).
"""

from __future__ import annotations

import json
import time
from typing import Any

import apsw

from appliance.phrases import Phrase
from appliance.protocol.site import (
    EntityPage,
    EntityPut,
    EntityQuery,
    EntityRow,
    History,
    HistoryQuery,
    HistoryRow,
    StateIn,
)
from appliance.protocol.store import MemoryIn
from appliance.site.changes import describe_change
from appliance.store.errors import Missing
from appliance.store.longterm import LongTerm
from appliance.store.sql import fetch_all, fetch_one

COLUMNS = "entity_id, body, state, attributes, state_at, available, state_problem, updated_at"


def _row(row: tuple[Any, ...]) -> EntityRow:
    entity_id, body, state, attributes, state_at, available, problem, updated = row
    return EntityRow.model_validate({**json.loads(str(body)), "entity_id": entity_id, "state": state,
                                     "attributes": json.loads(str(attributes)), "state_at": state_at,
                                     "available": None if available is None else bool(available),
                                     "state_problem": problem, "updated_at": updated})


class SiteBook:
    def __init__(self, conn: apsw.Connection, longterm: LongTerm) -> None:
        self.conn = conn
        self.longterm = longterm

    def put(self, change: EntityPut) -> int:
        now = time.time()
        with self.conn:
            for key in change.removed:
                self.conn.execute("DELETE FROM entities WHERE key = ?", (key,))
            for entity in change.put:
                self.conn.execute("DELETE FROM entities WHERE key = ? AND entity_id != ?", (entity.key,
                                                                                           entity.entity_id))
                body = entity.model_dump_json(exclude={"entity_id"})
                self.conn.execute(
                    "INSERT INTO entities(entity_id, key, component, name, area, device_id, body, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(entity_id) DO UPDATE SET key = excluded.key, "
                    "component = excluded.component, name = excluded.name, area = excluded.area, "
                    "device_id = excluded.device_id, body = excluded.body, updated_at = excluded.updated_at",
                    (entity.entity_id, entity.key, entity.component, entity.name, entity.area, entity.device_id,
                     body, now))
        return len(change.put) + len(change.removed)

    def states(self, states: list[StateIn]) -> list[EntityRow]:
        """Merge each state into its entity; the rows that changed (unknown entities are skipped)."""
        changed: dict[str, EntityRow] = {}
        with self.longterm.transaction():
            for given in states:
                current = changed.get(given.entity_id) or self._get(given.entity_id)
                if current is None:
                    continue
                state = given.state if given.state is not None else current.state
                attributes = {**current.attributes, **given.attributes}
                available = given.available if given.available is not None else current.available
                problem = given.problem if given.problem else ("" if given.state is not None or given.attributes
                                                               else current.state_problem)
                if (state, attributes, available, problem) == (current.state, current.attributes, current.available,
                                                               current.state_problem):
                    continue
                row = current.model_copy(update={"state": state, "attributes": attributes, "available": available,
                                                 "state_problem": problem, "state_at": given.at
                                                 if (state, attributes) != (current.state, current.attributes)
                                                 else current.state_at})
                self.conn.execute("UPDATE entities SET state = ?, attributes = ?, state_at = ?, available = ?, "
                                  "state_problem = ? WHERE entity_id = ?",
                                  (row.state, json.dumps(row.attributes), row.state_at,
                                   None if available is None else int(available), problem, row.entity_id))
                if (state, attributes) != (current.state, current.attributes):
                    self.conn.execute("INSERT INTO entity_history(entity_id, at, state, attributes) VALUES "
                                      "(?, ?, ?, ?)", (row.entity_id, given.at, state, json.dumps(attributes)))
                if state != current.state and state is not None:
                    self.longterm.insert(MemoryIn(
                        text=describe_change(row, current.state), kind="event", source=row.entity_id,
                        metadata={"entity_id": row.entity_id, "state": state, "area": row.area},
                        created_at=given.at))
                changed[row.entity_id] = row
        return list(changed.values())

    def _get(self, entity_id: str) -> EntityRow | None:
        row = fetch_one(self.conn, f"SELECT {COLUMNS} FROM entities WHERE entity_id = ?", (entity_id,))  # noqa: S608
        return _row(row) if row is not None else None

    def entity(self, entity_id: str) -> EntityRow:
        found = self._get(entity_id)
        if found is None:
            raise Missing(Phrase("entity.not_found", entity=entity_id))
        return found

    def entities(self, query: EntityQuery) -> EntityPage:
        where, params = ["entity_id > ?"], [query.cursor or ""]
        if query.component:
            where.append("component = ?")
            params.append(query.component)
        if query.area:
            where.append("lower(area) = lower(?)")
            params.append(query.area)
        if query.q:
            where.append("(instr(lower(entity_id), ?) OR instr(lower(name), ?) OR instr(lower(coalesce(area, '')), ?))")
            params += [query.q.lower()] * 3
        rows = fetch_all(self.conn, f"SELECT {COLUMNS} FROM entities WHERE {' AND '.join(where)} "  # noqa: S608
                                    "ORDER BY entity_id LIMIT ?", (*params, query.limit + 1))
        items = [_row(row) for row in rows[: query.limit]]
        return EntityPage(items=items, next_cursor=items[-1].entity_id if len(rows) > query.limit else None)

    def history(self, query: HistoryQuery) -> History:
        self.entity(query.entity_id)
        rows = fetch_all(self.conn, "SELECT at, state, attributes FROM entity_history WHERE entity_id = ? AND at >= ? "
                                    "ORDER BY at DESC LIMIT ?", (query.entity_id, query.since or 0.0, query.limit))
        return History(items=[HistoryRow(at=at, state=state, attributes=json.loads(str(attributes)))
                              for at, state, attributes in rows])

    def prune(self, keep_s: float, now: float | None = None) -> int:
        with self.conn:
            self.conn.execute("DELETE FROM entity_history WHERE at < ?", ((now or time.time()) - keep_s,))
            pruned = int(self.conn.changes())
        return pruned  # noqa: RET504 - returned after the with: mypy cannot see apsw's exit re-raise


