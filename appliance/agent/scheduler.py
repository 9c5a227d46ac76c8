"""The clock side of schedules: fire each schedule's trigger on time, make up for missed runs, queue tasks.

One heap of (next fire, schedule) and one sleep until the earliest: 1,000 schedules cost nothing
while nothing is due. Sleeps are at most MAX_SLEEP_S, so a wall-clock jump (NTP after a cold
boot without an RTC) is noticed within that. Each fire is marked in the store; at start, the fires
between a schedule's mark and now were missed (the box was off) and its ``missed`` policy says
what to do: skip them, run once, or run all (up to missed_max). A fire of a ``skip`` schedule
whose previous task is still queued or running creates nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from appliance.agent.schedules import Schedule
from appliance.agent.triggers import MqttTrigger, missed_fires, next_fire
from appliance.ipc.client import IpcClient
from appliance.protocol.common import Empty, Store
from appliance.protocol.tasks import (
    STORE_SCHEDULE_MARK,
    STORE_SCHEDULE_MARKS,
    STORE_TASK_CREATE,
    STORE_TASKS,
    ScheduleMark,
    TaskNew,
    TaskQuery,
    TaskState,
)

MAX_SLEEP_S = 30.0


class Scheduler:
    def __init__(self, schedules: list[Schedule], store: IpcClient[Store], actions: Callable[[], set[str]],
                 wake: Callable[[], None], log: logging.Logger, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.schedules = [s for s in schedules if s.enabled and not isinstance(s.parsed_trigger(), MqttTrigger)]
        self.store = store
        self.actions = actions
        self.wake = wake
        self.log = log
        self.clock = clock  # clock and sleep: a test drives both (tests/agent/test_scheduler.py)
        self.sleep = sleep
        self.fired = 0
        self.skipped = 0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def run(self) -> None:
        marks = (await self.store.call(STORE_SCHEDULE_MARKS, Empty())).marks
        now = self._now()
        heap: list[tuple[datetime, int]] = []
        for index, schedule in enumerate(self.schedules):
            trigger, tz = schedule.parsed_trigger(), schedule.tz
            last = datetime.fromtimestamp(marks[schedule.name], UTC) if schedule.name in marks else None
            if last is not None and schedule.missed != "skip":
                missed = missed_fires(trigger, last, now, tz, schedule.missed_max if schedule.missed == "all" else 1)
                for at in missed:
                    await self.fire(schedule, at, catching_up=True)
            upcoming = next_fire(trigger, now, tz, last)
            if upcoming is not None:
                heapq.heappush(heap, (upcoming, index))
        while heap:
            at, index = heap[0]
            delay = (at - self._now()).total_seconds()
            if delay > 0:
                await self.sleep(min(delay, MAX_SLEEP_S))
                continue
            heapq.heappop(heap)
            schedule = self.schedules[index]
            await self.fire(schedule, at)
            upcoming = next_fire(schedule.parsed_trigger(), max(at, self._now()), schedule.tz, at)
            if upcoming is not None:
                heapq.heappush(heap, (upcoming, index))

    async def fire(self, schedule: Schedule, at: datetime, *, catching_up: bool = False) -> int | None:
        """Queue the schedule's task for the fire at ``at``; the task's id, or None when skipped."""
        created = None
        if schedule.concurrency == "skip" and (await self.store.call(STORE_TASKS, TaskQuery(
                schedule=schedule.name, state=[TaskState.QUEUED, TaskState.RUNNING], limit=1))).items:
            self.skipped += 1
            self.log.info("schedule %s: the previous run is not done; this fire (%s) is skipped", schedule.name,
                          at.isoformat())
        else:
            task = await self.store.call(STORE_TASK_CREATE, TaskNew(
                spec=schedule.task(self.actions()), created_by=f"schedule:{schedule.name}", role="admin",
                schedule=schedule.name, max_attempts=schedule.retries + 1))
            created = task.id
            self.fired += 1
            self.log.info("schedule %s: %s task %d for %s", schedule.name, "missed run, queued" if catching_up
                          else "queued", task.id, at.isoformat(), extra={"SCHEDULE": schedule.name, "TASK": task.id})
            self.wake()
        await self.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name=schedule.name, last_fire=at.timestamp()))
        return created
