"""The task queue in a real memory file: the state machine, gap-free step numbers, priorities, recovery."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.phrases import Phrase, PhraseWire
from appliance.protocol.schedules import SchedulePut, StoredSchedule
from appliance.protocol.tasks import (
    Fire,
    StepIn,
    TaskDetailQuery,
    TaskNew,
    TaskQuery,
    TaskSpec,
    TaskState,
    TaskUpdate,
)
from appliance.store.db import MemoryDB
from appliance.store.errors import Conflict, Missing


def new(kind: str = "ask", priority: str = "interactive", **spec: object) -> TaskNew:
    needs: dict[str, dict[str, Any]] = {"action": {"action": "heartbeat"}, "ask": {"query": "q"},
                                        "command": {"argv": ["true"]}}
    fields = needs[kind]
    return TaskNew.model_validate({"spec": {"kind": kind, "priority": priority, **fields, **spec},
                                   "created_by": "ada", "role": "admin"})


def test_the_state_machine_allows_only_its_moves(db: MemoryDB) -> None:
    task = db.tasks.create(new())
    assert task.state is TaskState.QUEUED and task.last_seq == 1
    running = db.tasks.update(TaskUpdate(id=task.id, state=TaskState.RUNNING, expect=[TaskState.QUEUED]))
    assert running.started_at is not None
    with pytest.raises(Conflict, match="is running, not queued"):
        db.tasks.update(TaskUpdate(id=task.id, state=TaskState.RUNNING, expect=[TaskState.QUEUED]))
    done = db.tasks.update(TaskUpdate(id=task.id, state=TaskState.SUCCEEDED, result={"answer": 42}, progress=100))
    assert done.finished_at is not None and done.result == {"answer": 42}
    for state in (TaskState.RUNNING, TaskState.CANCELLED, TaskState.QUEUED):
        with pytest.raises(Conflict, match="cannot become"):
            db.tasks.update(TaskUpdate(id=task.id, state=state))
    with pytest.raises(Missing):
        db.tasks.update(TaskUpdate(id=999, state=TaskState.CANCELLED))


def test_steps_are_numbered_without_gaps_and_replay_after_a_number(db: MemoryDB) -> None:
    task = db.tasks.create(new())
    for n in range(5):
        db.tasks.step(StepIn(id=task.id, message=f"step {n}", data={"n": n}))
    db.tasks.update(TaskUpdate(id=task.id, state=TaskState.RUNNING))
    detail = db.tasks.detail(TaskDetailQuery(id=task.id))
    assert [s.seq for s in detail.steps] == list(range(1, 8)) and detail.task.last_seq == 7
    assert [s.message for s in db.tasks.detail(TaskDetailQuery(id=task.id, after_seq=5)).steps] == [
        "step 4", "running"]
    with pytest.raises(Missing):
        db.tasks.step(StepIn(id=12345, message="x"))


def test_a_step_and_an_error_keep_their_phrase_and_a_spoiled_one_is_left_out(db: MemoryDB) -> None:
    """The box's words by code ride with steps and errors (schema 12), for the page's own language."""
    task = db.tasks.create(new())
    db.tasks.step(StepIn.saying(task.id, Phrase("task.sandbox_end", summary="exit 1"), {"exit_code": 1}))
    db.tasks.step(StepIn.saying(task.id, "plain words"))
    db.tasks.update(TaskUpdate(id=task.id, state=TaskState.RUNNING))
    timed_out = Phrase("task.timed_out", timeout_s="30")
    ended = db.tasks.update(TaskUpdate(id=task.id, state=TaskState.TIMED_OUT, error=str(timed_out),
                                       error_phrase=timed_out.wire()))
    assert ended.error == "not done after its timeout of 30 s" and ended.error_phrase == timed_out.wire()
    steps = db.tasks.detail(TaskDetailQuery(id=task.id)).steps
    assert (steps[1].message, steps[1].phrase) == ("sandbox end: exit 1",
                                                   PhraseWire(code="task.sandbox_end", args={"summary": "exit 1"}))
    assert steps[2].phrase is None
    # A phrase the file holds but this release cannot read (edited by hand, a code from elsewhere).
    db.conn.execute("UPDATE task_steps SET phrase = '{\"code\": 5' WHERE task_id = ? AND seq = 2", (task.id,))
    db.conn.execute("UPDATE tasks SET error_phrase = '[]' WHERE id = ?", (task.id,))
    detail = db.tasks.detail(TaskDetailQuery(id=task.id))
    assert detail.steps[1].phrase is None and detail.steps[1].message == "sandbox end: exit 1"
    assert detail.task.error_phrase is None and detail.task.error == ended.error


def test_due_tasks_come_most_urgent_first_and_not_before_their_time(db: MemoryDB) -> None:
    background = db.tasks.create(new(priority="background"))
    scheduled = db.tasks.create(new(priority="scheduled"))
    interactive = db.tasks.create(new(priority="interactive"))
    later = db.tasks.create(TaskNew.model_validate({**new().model_dump(), "not_before": 4e9}))
    order = [t.id for t in db.tasks.due().items]
    assert order == [interactive.id, scheduled.id, background.id] and later.id not in order


def test_a_restart_requeues_what_can_run_again_and_fails_the_rest_with_the_reason(db: MemoryDB) -> None:
    ask, command, queued = db.tasks.create(new("ask")), db.tasks.create(new("command")), db.tasks.create(new())
    for task in (ask, command):
        db.tasks.update(TaskUpdate(id=task.id, state=TaskState.RUNNING))
    recovered = db.tasks.recover(["search", "ask"])
    assert (recovered.requeued, recovered.failed) == ([ask.id], [command.id])
    failed = db.tasks.get(command.id)
    assert failed.state is TaskState.FAILED and "may have acted already" in failed.error
    assert failed.error_phrase == PhraseWire(code="task.restarted", args={"kind": "command"})
    assert db.tasks.get(ask.id).state is TaskState.QUEUED and db.tasks.get(queued.id).state is TaskState.QUEUED
    assert db.tasks.recover(["search", "ask"]).requeued == []


def test_listing_filters_and_pages(db: MemoryDB) -> None:
    ids = [db.tasks.create(new()).id for _ in range(7)]
    db.tasks.update(TaskUpdate(id=ids[0], state=TaskState.CANCELLED))
    page = db.tasks.list(TaskQuery(limit=3))
    assert [t.id for t in page.items] == ids[::-1][:3] and page.next_cursor == ids[4]
    rest = db.tasks.list(TaskQuery(limit=10, cursor=page.next_cursor))
    assert [t.id for t in rest.items] == ids[::-1][3:] and rest.next_cursor is None
    assert [t.id for t in db.tasks.list(TaskQuery(state=[TaskState.CANCELLED])).items] == [ids[0]]


def test_schedule_marks_survive_reopening(db: MemoryDB) -> None:
    db.tasks.mark("log_monitor", 1_800_000_000.0)
    db.tasks.mark("log_monitor", 1_800_000_300.0)
    assert db.tasks.marks() == {"log_monitor": 1_800_000_300.0}
    assert TaskSpec.model_validate({"kind": "ask", "query": "q"}).priority == "interactive"


def test_schedule_fires_are_one_transaction_and_skip_a_busy_schedule(db: MemoryDB) -> None:
    def fire(name: str, at: float, skip: bool) -> Fire:
        task = new("command").model_copy(update={"schedule": name})
        return Fire(task=task, at=at, skip_if_busy=skip)

    first = db.tasks.fire([fire(f"s{i}", 100.0, skip=True) for i in range(1000)])
    assert None not in first and len(set(first)) == 1000
    # s0's task is still queued: a skip schedule creates nothing; a queue schedule does.
    again = db.tasks.fire([fire("s0", 160.0, skip=True), fire("s1", 160.0, skip=False)])
    assert again[0] is None and again[1] is not None
    assert db.tasks.marks()["s0"] == 160.0 and db.tasks.marks()["s999"] == 100.0
    db.tasks.update(TaskUpdate(id=first[0], state=TaskState.CANCELLED))
    assert db.tasks.fire([fire("s0", 220.0, skip=True)])[0] is not None


def test_saved_schedules_create_replace_and_delete_with_their_mark(db: MemoryDB) -> None:
    item = StoredSchedule(name="ping", body={"trigger": "interval:5m", "action": "heartbeat"}, run_as="operator",
                          updated_by="ada")
    saved = db.tasks.put_schedule(SchedulePut(schedule=item, mode="create"))
    assert saved.updated_at > 0
    with pytest.raises(Conflict, match="exists already"):
        db.tasks.put_schedule(SchedulePut(schedule=item, mode="create"))
    with pytest.raises(Missing, match="no schedule 'other'"):
        db.tasks.put_schedule(SchedulePut(schedule=item.model_copy(update={"name": "other"}), mode="replace"))
    db.tasks.put_schedule(SchedulePut(schedule=item.model_copy(update={"body": {"trigger": "interval:1h",
                                                                                "action": "heartbeat"}}),
                                      mode="replace"))
    [stored] = db.tasks.schedules().items
    assert stored.body["trigger"] == "interval:1h" and stored.run_as == "operator"
    db.tasks.mark("ping", 1000.0)
    assert db.tasks.delete_schedule("ping") == 1
    assert db.tasks.schedules().items == [] and "ping" not in db.tasks.marks()
    with pytest.raises(Missing):
        db.tasks.delete_schedule("ping")
