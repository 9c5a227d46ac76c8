"""The clock side of schedules: fire each schedule's trigger on time, make up for missed runs, queue tasks.

One heap of (next fire, schedule) and one sleep until the earliest: 1,000 schedules cost nothing
while nothing is due, and the fires due at one moment go to the store as one batch (one
transaction), so 1,000 schedules due at the same minute are queued together, not one by one.
Sleeps are at most MAX_SLEEP_S, so a wall-clock jump (NTP after a cold boot without an RTC) is
noticed within that. Each fire is marked in the store; at start, the fires
between a schedule's mark and now were missed (the box was off) and its ``missed`` policy says
what to do: skip them, run once, or run all (up to missed_max). A fire of a ``skip`` schedule
whose previous task is still queued or running creates nothing (checked in the same transaction).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from appliance.ipc.client import IpcClient
from appliance.protocol.common import Empty, Store
from appliance.protocol.tasks import STORE_SCHEDULE_FIRE, STORE_SCHEDULE_MARKS, Fire, Fires, TaskNew
from appliance.schedules.model import Schedule
from appliance.schedules.triggers import EVENT_TRIGGERS, missed_fires, next_fire

MAX_SLEEP_S = 30.0


class Scheduler:
    def __init__(self, schedules: list[Schedule], store: IpcClient[Store], actions: Callable[[], set[str]],
                 wake: Callable[[], None], log: logging.Logger, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.schedules = [s for s in schedules if s.enabled and not isinstance(s.parsed_trigger(), EVENT_TRIGGERS)]
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
        missed: list[tuple[Schedule, datetime]] = []
        for index, schedule in enumerate(self.schedules):
            trigger, tz = schedule.parsed_trigger(), schedule.tz
            last = datetime.fromtimestamp(marks[schedule.name], UTC) if schedule.name in marks else None
            if last is not None and schedule.missed != "skip":
                limit = schedule.missed_max if schedule.missed == "all" else 1
                missed += [(schedule, at) for at in missed_fires(trigger, last, now, tz, limit)]
            upcoming = next_fire(trigger, now, tz, last)
            if upcoming is not None:
                heapq.heappush(heap, (upcoming, index))
        if missed:
            await self.fire(missed, catching_up=True)
        while heap:
            delay = (heap[0][0] - self._now()).total_seconds()
            if delay > 0:
                await self.sleep(min(delay, MAX_SLEEP_S))
                continue
            due: list[tuple[datetime, int]] = []
            while heap and heap[0][0] <= self._now():
                due.append(heapq.heappop(heap))
            await self.fire([(self.schedules[index], at) for at, index in due])
            for at, index in due:
                schedule = self.schedules[index]
                upcoming = next_fire(schedule.parsed_trigger(), max(at, self._now()), schedule.tz, at)
                if upcoming is not None:
                    heapq.heappush(heap, (upcoming, index))

    async def fire(self, due: list[tuple[Schedule, datetime]], *, catching_up: bool = False) -> list[int | None]:
        """Queue each schedule's task for its fire at ``at`` (a ``skip`` schedule's only when its last
        one is done), marks included, in one store transaction; the tasks' ids, None where skipped."""
        fires = [Fire(task=TaskNew(spec=schedule.task(self.actions()), created_by=f"schedule:{schedule.name}",
                                   role=schedule.run_as, schedule=schedule.name, max_attempts=schedule.retries + 1),
                      at=at.timestamp(), skip_if_busy=schedule.concurrency == "skip") for schedule, at in due]
        created = (await self.store.call(STORE_SCHEDULE_FIRE, Fires(fires=fires))).created
        for (schedule, at), task in zip(due, created, strict=True):
            if task is None:
                self.skipped += 1
                self.log.info("schedule %s: the previous run is not done; this fire (%s) is skipped", schedule.name,
                              at.isoformat())
            else:
                self.fired += 1
                self.log.info("schedule %s: %s task %d for %s", schedule.name, "missed run, queued" if catching_up
                              else "queued", task, at.isoformat(), extra={"SCHEDULE": schedule.name, "TASK": task})
        if any(task is not None for task in created):
            self.wake()
        return created
