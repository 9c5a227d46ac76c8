"""The task runner: claims queued tasks from the store, runs each by its kind, records how it ended.

Order of things, for durability: a task is claimed (queued -> running, checked by the store) before
anything runs, every milestone is a step in the store, and the end is one state move. After a
restart, the store's recover() settles what was running; nothing is held only here.

Gates: model work (ask, search) takes one of resource.max_concurrency slots, everything else one
of agent.max_parallel_tasks; the store hands out due tasks most urgent first. An action declared
with ``approval: true`` is not claimed until someone approves it: its task waits in
waiting_approval (tasks.approve puts it back in the queue, approved; tasks.reject cancels it). A schedule's
concurrency policy is kept here: ``queue`` runs its tasks one at a time, ``parallel`` up to
max_parallel, ``skip`` never queued a second one (scheduler.py). A failed attempt goes back to the
queue with a doubling backoff while attempts remain; the final failure runs the schedule's
fallback with the failure as its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import JsonValue

from appliance.agent.actions import Actions
from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import Conflict, IpcError
from appliance.phrases import Phrase, said, words
from appliance.protocol.common import Store
from appliance.protocol.tasks import (
    STORE_TASK_CREATE,
    STORE_TASK_NEXT,
    STORE_TASK_STEP,
    STORE_TASK_UPDATE,
    STORE_TASKS,
    STORE_TASKS_RECOVER,
    Resumable,
    StepIn,
    TaskNew,
    TaskQuery,
    TaskRow,
    TaskState,
    TaskUpdate,
)
from appliance.schedules.model import Schedule
from appliance.taskkinds import KINDS, resumable
from appliance.taskkinds.action import needs_approval
from appliance.taskkinds.base import RunFailed, WaitsForApproval

POLL_S = 2.0
CANCEL_WAIT_S = 10.0


class TaskRunner:
    def __init__(self, config: ApplianceConfig, store: IpcClient[Store], actions: Actions,
                 schedules: Callable[[], dict[str, Schedule]], log: logging.Logger,
                 ended: Callable[[TaskRow, TaskState, str], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.ended = ended  # told of each final end (after it is recorded): the Home Assistant event
        self.store = store
        self.actions = actions
        self.schedules = schedules
        self.log = log
        self.wake = asyncio.Event()
        self.running: dict[int, tuple[TaskRow, asyncio.Task[None]]] = {}
        self.finished: Counter[str] = Counter()
        self.cancelling: set[int] = set()

    async def run(self) -> None:
        recovered = await self._retrying(lambda: self.store.call(STORE_TASKS_RECOVER, Resumable(kinds=resumable())))
        if recovered.requeued or recovered.failed:
            self.log.warning("after a restart: tasks %s queued again, %s failed (they may have acted already)",
                             recovered.requeued, recovered.failed)
        while True:
            try:
                await self._start_due()
                await self._expire_waiting()
            except IpcError as exc:
                self.log.warning("cannot read the task queue: %s", exc)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_S)

    async def stop(self) -> None:
        for _, work in list(self.running.values()):
            work.cancel()
        await asyncio.gather(*(work for _, work in self.running.values()), return_exceptions=True)

    async def cancel(self, task_id: int) -> bool:
        """Stop a running task (its sandbox is killed) and wait, a while, until its end is recorded."""
        entry = self.running.get(task_id)
        if entry is None:
            return False
        self.cancelling.add(task_id)
        entry[1].cancel()
        await asyncio.wait({entry[1]}, timeout=CANCEL_WAIT_S)
        return True

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call`` again every POLL_S while the store is away (a Conflict is an answer, not an absence:
        it is raised). Used for what must reach the store: recovery, and how a task ended, which
        would otherwise leave the task running in the store for ever while this agent lives on."""
        while True:
            try:
                return await call()
            except Conflict:
                raise
            except IpcError as exc:
                self.log.warning("store unavailable (%s); retrying", exc)
                await asyncio.sleep(POLL_S)

    @staticmethod
    def _model_work(task: TaskRow) -> bool:
        kind = KINDS.get(task.spec.kind)
        return kind is not None and kind.model_work

    def _room(self, task: TaskRow) -> bool:
        busy = [row for row, _ in self.running.values()]
        model = sum(self._model_work(row) for row in busy)
        if self._model_work(task):
            if model >= self.config.resource.max_concurrency:
                return False
        elif len(busy) - model >= self.config.agent.max_parallel_tasks:
            return False
        schedule = self.schedules().get(task.schedule or "")
        if schedule is None:
            return True
        same = sum(row.schedule == task.schedule for row in busy)
        return same < (schedule.max_parallel if schedule.concurrency == "parallel" else 1)

    def _needs_approval(self, task: TaskRow) -> bool:
        if task.spec.kind != "action" or task.approved_by is not None:
            return False
        try:
            return needs_approval(self.config, KINDS["action"].stored(task.spec.fields()))
        except Exception:  # a spec that no longer parses fails when it runs, saying why
            return False

    async def _expire_waiting(self) -> None:
        """A task nobody approved or rejected within its timeout ends timed out, saying so."""
        waiting = await self.store.call(STORE_TASKS, TaskQuery(state=[TaskState.WAITING_APPROVAL], limit=500))
        now = time.time()
        for task in waiting.items:
            if task.updated_at + task.spec.timeout_s < now:
                with contextlib.suppress(Conflict):
                    await self.store.call(STORE_TASK_UPDATE, TaskUpdate(
                        id=task.id, state=TaskState.TIMED_OUT, expect=[TaskState.WAITING_APPROVAL],
                        error=f"no one approved or rejected it within its timeout of {task.spec.timeout_s:g} s"))
                    self.finished[TaskState.TIMED_OUT.value] += 1

    async def _start_due(self) -> None:
        for task in (await self.store.call(STORE_TASK_NEXT)).items:
            if self._needs_approval(task):
                with contextlib.suppress(Conflict):  # cancelled meanwhile
                    await self.store.call(STORE_TASK_UPDATE, TaskUpdate(
                        id=task.id, state=TaskState.WAITING_APPROVAL, expect=[TaskState.QUEUED]))
                    self.log.info("task %d (%s) waits for approval", task.id, task.spec.fields().get("action"))
                continue
            if task.id in self.running or not self._room(task):
                continue
            try:
                claimed = await self.store.call(STORE_TASK_UPDATE, TaskUpdate(
                    id=task.id, state=TaskState.RUNNING, expect=[TaskState.QUEUED], attempts=task.attempts + 1))
            except Conflict:
                continue  # cancelled (or claimed) meanwhile
            self.running[task.id] = (claimed, asyncio.create_task(self._run(claimed), name=f"task-{task.id}"))

    async def _run(self, task: TaskRow) -> None:
        try:
            outcome = await self._attempt(task)
            await self._settle(task, *outcome)
        except Exception:
            self.log.exception("task %d: could not record its end", task.id)
        finally:
            self.running.pop(task.id, None)
            self.cancelling.discard(task.id)
            self.wake.set()

    async def _attempt(self, task: TaskRow) -> tuple[TaskState, JsonValue, str | Phrase]:
        async def step(message: str | Phrase, data: JsonValue = None) -> None:
            # Waits out a store restart (within the task's timeout): the work done is not failed
            # for want of its milestone's record.
            await self._retrying(lambda: self.store.call(STORE_TASK_STEP, StepIn.saying(task.id, message, data)))
            if isinstance(data, dict) and isinstance(percent := data.get("percent"), int | float):
                # A step that says how far the task is also moves its progress (what lists show);
                # a task being cancelled meanwhile keeps its state (the update is refused, not an error).
                with contextlib.suppress(Conflict):
                    await self.store.call(STORE_TASK_UPDATE, TaskUpdate(
                        id=task.id, progress=min(max(percent, 0), 99), expect=[TaskState.RUNNING]))

        try:
            async with asyncio.timeout(task.spec.timeout_s):
                result = await self.actions.run(task, step)
            return TaskState.SUCCEEDED, result, ""
        except TimeoutError:
            return TaskState.TIMED_OUT, None, Phrase("task.timed_out", timeout_s=f"{task.spec.timeout_s:g}")
        except asyncio.CancelledError:
            if task.id not in self.cancelling:
                raise  # the agent is stopping: the task stays running for recover() to settle
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return TaskState.CANCELLED, None, Phrase("task.cancelled_while_running")
        except RunFailed as exc:
            return TaskState.FAILED, exc.result, said(exc)
        except WaitsForApproval as exc:
            return TaskState.WAITING_APPROVAL, None, said(exc)
        except IpcError as exc:
            return TaskState.FAILED, None, Phrase("task.service_failed", why=str(exc))
        except Exception as exc:  # a fault of ours (or a missing tool): the task must still end, saying why
            self.log.exception("task %d: the %s task failed unexpectedly", task.id, task.spec.kind)
            return TaskState.FAILED, None, f"{type(exc).__name__}: {exc}"[:4000]

    async def _settle(self, task: TaskRow, state: TaskState, result: JsonValue, said_error: str | Phrase) -> None:
        error, error_phrase = words(said_error)
        error = error[:4000]

        def record(update: TaskUpdate) -> Awaitable[Any]:
            # A retry after the store died past its commit meets a Conflict (no longer running):
            # then the end was recorded, and it is treated as settled, as from outside.
            return self._retrying(lambda: self.store.call(STORE_TASK_UPDATE, update))

        if state is TaskState.WAITING_APPROVAL:  # not an end: a person decides (tasks.approve / reject)
            with contextlib.suppress(Conflict):
                await record(TaskUpdate(id=task.id, state=state, error=error, error_phrase=error_phrase,
                                        expect=[TaskState.RUNNING]))
            return
        self.finished[state.value] += 1
        attempts = task.attempts
        if state in (TaskState.FAILED, TaskState.TIMED_OUT) and attempts < task.max_attempts:
            schedule = self.schedules().get(task.schedule or "")
            backoff = (schedule.retry_backoff_s if schedule else 30.0) * 2 ** (attempts - 1)
            with contextlib.suppress(Conflict):
                # The English says which attempt; the phrase (for the page) is the attempt's own error.
                await record(TaskUpdate(
                    id=task.id, state=TaskState.QUEUED,
                    error=f"attempt {attempts} of {task.max_attempts}: {error}"[:4000],
                    error_phrase=error_phrase, not_before=time.time() + backoff, expect=[TaskState.RUNNING]))
            return
        try:
            await record(TaskUpdate(id=task.id, state=state, result=result, error=error or None,
                                    error_phrase=error_phrase, progress=100.0 if state is TaskState.SUCCEEDED else None,
                                    expect=[TaskState.RUNNING]))
        except Conflict:
            return  # settled from outside meanwhile (cancelled): that state stands
        if self.ended is not None:
            await self.ended(task, state, error)
        if state in (TaskState.FAILED, TaskState.TIMED_OUT):
            await self._fallback(task, state, result, error)

    async def _fallback(self, task: TaskRow, state: TaskState, result: JsonValue, error: str) -> None:
        schedule = self.schedules().get(task.schedule or "")
        if schedule is None or schedule.fallback is None:
            return
        failure: JsonValue = {"task": task.id, "schedule": schedule.name, "state": state.value, "error": error,
                              "result": result}
        spec = schedule.task(self.actions.names(), what=schedule.fallback, given=failure)
        fallback = await self.store.call(STORE_TASK_CREATE, TaskNew(
            spec=spec, created_by=f"schedule:{schedule.name}:fallback", role=schedule.run_as, schedule=None))
        await self.store.call(STORE_TASK_STEP, StepIn.saying(task.id, "fallback queued",
                                                             {"task": fallback.id, "action": schedule.fallback}))
        self.log.warning("schedule %s: task %d %s (%s); fallback %r is task %d", schedule.name, task.id,
                         state.value, error, schedule.fallback, fallback.id)
        self.wake.set()
