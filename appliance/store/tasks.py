"""Tasks in the memory file: the durable queue, its state machine, step logs, schedule marks and
the schedules saved through the commands.

Invariants:
- A task moves only along protocol.tasks.TRANSITIONS, checked here inside the write's
  transaction, so of two racing moves (finish and cancel) exactly one wins; a final state is final.
- A task's steps are numbered 1, 2, 3... without gaps (last_seq is bumped in the same transaction),
  so a client that saw step n misses nothing by asking for the steps after n.
- Nothing is lost to a restart: recover() turns every task left ``running`` into ``queued``
  (a kind that may run again) or ``failed`` with the reason.

SQL is built only from the constants below and fixed clause strings; values are always bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import apsw

from appliance.phrases import Phrase, PhraseWire
from appliance.protocol.schedules import SchedulePut, StoredSchedule, StoredSchedules
from appliance.protocol.tasks import (
    FINAL,
    TRANSITIONS,
    Fire,
    Recovered,
    StepIn,
    StepRow,
    TaskDetail,
    TaskDetailQuery,
    TaskNew,
    TaskPage,
    TaskQuery,
    TaskRow,
    TaskState,
    TaskUpdate,
)
from appliance.store.errors import Conflict, Missing
from appliance.store.sql import fetch_all, fetch_one

TASK_COLUMNS = ("id, state, spec, created_by, role, schedule, created_at, updated_at, started_at, finished_at, "
                "progress, attempts, max_attempts, not_before, result, error, last_seq, approved_by, error_phrase")
INSERT_TASK = ("INSERT INTO tasks(state, kind, spec, created_by, role, schedule, created_at, updated_at, "  # noqa: S608
               f"max_attempts, not_before) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TASK_COLUMNS}")
PRIORITY_ORDER = "CASE json_extract(spec, '$.priority') WHEN 'interactive' THEN 0 WHEN 'scheduled' THEN 1 ELSE 2 END"


def _task(row: tuple[Any, ...]) -> TaskRow:
    (ident, state, spec, by, role, schedule, created, updated, started, finished, progress, attempts,
     max_attempts, not_before, result, error, last_seq, approved_by, error_phrase) = row
    return TaskRow.model_validate({
        "id": ident, "state": state, "spec": json.loads(spec), "created_by": by, "role": role,
        "schedule": schedule, "created_at": created, "updated_at": updated, "started_at": started,
        "finished_at": finished, "progress": progress, "attempts": attempts, "max_attempts": max_attempts,
        "not_before": not_before, "result": json.loads(result) if result is not None else None, "error": error,
        "last_seq": last_seq, "approved_by": approved_by, "error_phrase": PhraseWire.lenient(error_phrase)})


class TaskBook:
    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn

    def create(self, task: TaskNew) -> TaskRow:
        with self.conn:
            ident = self._insert(task, time.time())
        return self.get(ident)

    def _insert(self, task: TaskNew, now: float) -> int:
        row = fetch_one(self.conn, INSERT_TASK,
                        (task.spec.kind, task.spec.model_dump_json(), task.created_by, task.role, task.schedule,
                         now, now, task.max_attempts, task.not_before))
        assert row is not None
        self._step(int(row[0]), "queued", {"by": task.created_by, "schedule": task.schedule}, now)
        return int(row[0])

    def fire(self, fires: list[Fire]) -> list[int | None]:
        """Schedule fires in one transaction: 1,000 due at the same second cost one commit."""
        now = time.time()
        created: list[int | None] = []
        with self.conn:
            for fire in fires:
                name = fire.task.schedule
                busy = fire.skip_if_busy and fetch_one(
                    self.conn, "SELECT 1 FROM tasks INDEXED BY tasks_state WHERE state IN ('queued', 'running') "
                               "AND schedule = ? LIMIT 1", (name,)) is not None
                created.append(None if busy else self._insert(fire.task, now))
                if name is not None:
                    self.mark(name, fire.at)
        return created

    def get(self, ident: int) -> TaskRow:
        row = fetch_one(self.conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (ident,))  # noqa: S608
        if row is None:
            raise Missing(Phrase("task.not_found", id=ident))
        return _task(row)

    def detail(self, query: TaskDetailQuery) -> TaskDetail:
        task = self.get(query.id)
        rows = fetch_all(self.conn, "SELECT seq, at, message, data, phrase FROM task_steps WHERE task_id = ? "
                                    "AND seq > ? ORDER BY seq LIMIT ?", (query.id, query.after_seq, query.steps))
        return TaskDetail(task=task, steps=[StepRow(seq=seq, at=at, message=message, phrase=PhraseWire.lenient(phrase),
                                                    data=json.loads(data) if data is not None else None)
                                            for seq, at, message, data, phrase in rows])

    def list(self, query: TaskQuery) -> TaskPage:
        clauses, params = ["1"], list[object]()
        if query.state:
            clauses.append(f"state IN ({', '.join('?' * len(query.state))})")
            params += [state.value for state in query.state]
        for column, value in (("schedule", query.schedule), ("kind", query.kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.cursor is not None:
            clauses.append("id < ?")
            params.append(query.cursor)
        rows = fetch_all(self.conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(clauses)} "  # noqa: S608
                                    "ORDER BY id DESC LIMIT ?", (*params, query.limit + 1))
        items = [_task(row) for row in rows[:query.limit]]
        return TaskPage(items=items, next_cursor=items[-1].id if len(rows) > query.limit else None)

    def due(self, limit: int = 64) -> TaskPage:
        """Queued tasks whose time has come, most urgent first (interactive, scheduled, background; then age)."""
        rows = fetch_all(self.conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued' AND not_before <= ? "  # noqa: S608
                                    f"ORDER BY {PRIORITY_ORDER}, id LIMIT ?", (time.time(), limit))
        return TaskPage(items=[_task(row) for row in rows])

    def update(self, change: TaskUpdate) -> TaskRow:
        now = time.time()
        with self.conn:
            task = self.get(change.id)
            if change.expect is not None and task.state not in change.expect:
                raise Conflict(Phrase("task.state_not_expected", id=change.id, state=task.state.value,
                                      expected=" | ".join(state.value for state in change.expect)))
            sets, params = ["updated_at = ?"], list[object]([now])
            if change.state is not None and change.state is not task.state:
                if change.state not in TRANSITIONS[task.state]:
                    raise Conflict(Phrase("task.state_cannot_change", id=change.id, state=task.state.value,
                                          new=change.state.value))
                sets.append("state = ?")
                params.append(change.state.value)
                if change.state is TaskState.RUNNING:
                    sets.append("started_at = ?")
                    params.append(now)
                if change.state in FINAL:
                    sets.append("finished_at = ?")
                    params.append(now)
                said = {key: value for key, value in (("error", change.error), ("approved_by", change.approved_by))
                        if value}
                self._step(change.id, change.state.value, said or None, now)
            for column, value in (("progress", change.progress), ("error", change.error),
                                  ("not_before", change.not_before), ("attempts", change.attempts),
                                  ("approved_by", change.approved_by)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value)
            if change.result is not None:
                sets.append("result = ?")
                params.append(json.dumps(change.result))
            if change.error is not None:  # a new error replaces the old one's code too (NULL: words only)
                sets.append("error_phrase = ?")
                params.append(change.error_phrase.model_dump_json() if change.error_phrase else None)
            self.conn.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?", (*params, change.id))  # noqa: S608
        return self.get(change.id)

    def step(self, step: StepIn) -> int:
        with self.conn:
            if fetch_one(self.conn, "SELECT 1 FROM tasks WHERE id = ?", (step.id,)) is None:
                raise Missing(Phrase("task.not_found", id=step.id))
            seq = self._step(step.id, step.message, step.data, time.time(), step.phrase)
        return seq  # noqa: RET504 - returned after the with: mypy cannot see apsw's exit re-raise

    def _step(self, ident: int, message: str, data: object, at: float, phrase: PhraseWire | None = None) -> int:
        row = fetch_one(self.conn, "UPDATE tasks SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                        (ident,))
        assert row is not None
        self.conn.execute("INSERT INTO task_steps(task_id, seq, at, message, data, phrase) VALUES (?, ?, ?, ?, ?, ?)",
                          (ident, row[0], at, message, json.dumps(data) if data is not None else None,
                           phrase.model_dump_json() if phrase else None))
        return int(row[0])

    def recover(self, resumable: Sequence[str]) -> Recovered:
        """After the agent (or the box) restarted: nothing stays ``running`` with nobody running it."""
        requeued, failed = [], []
        now = time.time()
        with self.conn:
            for ident, kind in fetch_all(self.conn, "SELECT id, kind FROM tasks WHERE state = 'running' ORDER BY id"):
                if kind in resumable:
                    self.conn.execute("UPDATE tasks SET state = 'queued', updated_at = ? WHERE id = ?", (now, ident))
                    self._step(ident, "queued", {"why": "resumed after the agent restarted"}, now)
                    requeued.append(ident)
                else:
                    reason = Phrase("task.restarted", kind=kind)
                    self.conn.execute("UPDATE tasks SET state = 'failed', error = ?, error_phrase = ?, "
                                      "finished_at = ?, updated_at = ? WHERE id = ?",
                                      (str(reason), reason.wire().model_dump_json(), now, now, ident))
                    self._step(ident, "failed", {"error": str(reason)}, now)
                    failed.append(ident)
        return Recovered(requeued=requeued, failed=failed)

    def mark(self, name: str, last_fire: float) -> int:
        with self.conn:
            self.conn.execute("INSERT INTO schedule_marks(name, last_fire) VALUES (?, ?) "
                              "ON CONFLICT(name) DO UPDATE SET last_fire = excluded.last_fire", (name, last_fire))
        return 1

    def marks(self) -> dict[str, float]:
        return {name: at for name, at in fetch_all(self.conn, "SELECT name, last_fire FROM schedule_marks")}

    def schedules(self) -> StoredSchedules:
        rows = fetch_all(self.conn, "SELECT name, body, run_as, updated_by, updated_at FROM schedules ORDER BY name")
        return StoredSchedules(items=[StoredSchedule(name=name, body=json.loads(body), run_as=run_as, updated_by=by,
                                                     updated_at=at) for name, body, run_as, by, at in rows])

    def put_schedule(self, put: SchedulePut) -> StoredSchedule:
        item, now = put.schedule, time.time()
        with self.conn:
            exists = fetch_one(self.conn, "SELECT 1 FROM schedules WHERE name = ?", (item.name,)) is not None
            if put.mode == "create" and exists:
                raise Conflict(Phrase("schedule.exists", name=item.name))
            if put.mode == "replace" and not exists:
                raise Missing(Phrase("schedule.not_found", name=item.name))
            self.conn.execute("INSERT INTO schedules(name, body, run_as, updated_by, created_at, updated_at) "
                              "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body, "
                              "run_as = excluded.run_as, updated_by = excluded.updated_by, "
                              "updated_at = excluded.updated_at",
                              (item.name, json.dumps(item.body), item.run_as, item.updated_by, now, now))
        return item.model_copy(update={"updated_at": now})

    def delete_schedule(self, name: str) -> int:
        """Its mark goes with it: a new schedule of the same name does not make up for the old one's runs."""
        with self.conn:
            if fetch_one(self.conn, "SELECT 1 FROM schedules WHERE name = ?", (name,)) is None:
                raise Missing(Phrase("schedule.not_found", name=name))
            self.conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            self.conn.execute("DELETE FROM schedule_marks WHERE name = ?", (name,))
        return 1
