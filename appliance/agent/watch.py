"""Event side of schedules: device events start the tasks of ``mqtt:<topic filter>`` schedules, and
changes of an entity's state those of ``entity:<pattern>[=<state>]`` schedules.

The agent does not hold a broker connection of its own: the mqtt service stores every accepted
event (acknowledged only once stored), and this reads the store's new events after a cursor,
oldest first. So a trigger fires on an event the box has kept, never on one it dropped, and
events that arrived while the agent was down still fire once it is back (the cursor is kept in
the store with the schedule marks). Debounce: one task per schedule per debounce_s window, from
the first event of a burst; the rest of the burst is counted, not queued. The task's input is
the event that fired it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable

from pydantic import JsonValue

from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Empty, Store
from appliance.protocol.devices import STORE_EVENTS_AFTER, EventsAfter
from appliance.protocol.store import MemoryRecord
from appliance.protocol.tasks import STORE_SCHEDULE_MARK, STORE_SCHEDULE_MARKS, STORE_TASK_CREATE, ScheduleMark, TaskNew
from appliance.protocol.topics import topic_filter
from appliance.schedules.model import Schedule
from appliance.schedules.triggers import EntityTrigger, MqttTrigger

POLL_S = 1.0
CURSOR = "events:cursor"  # a mark no schedule can be named (names have no colon)


class EventTriggers:
    def __init__(self, schedules: list[Schedule], store: IpcClient[Store], actions: Callable[[], set[str]],
                 wake: Callable[[], None], log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.watched = [(s, topic_filter((trigger.topic_filter,))) for s in schedules
                        if s.enabled and isinstance(trigger := s.parsed_trigger(), MqttTrigger)]
        self.entities = [(s, trigger) for s in schedules
                         if s.enabled and isinstance(trigger := s.parsed_trigger(), EntityTrigger)]
        self.store = store
        self.actions = actions
        self.wake = wake
        self.log = log
        self.clock = clock
        self.last_fire: dict[str, float] = {}
        self.fired = 0
        self.debounced = 0

    async def run(self) -> None:
        if not self.watched and not self.entities:
            return
        cursor = await self._cursor()
        while True:
            try:
                cursor = await self.poll(cursor)
            except IpcError as exc:
                self.log.warning("cannot read new device events: %s", exc)
            await asyncio.sleep(POLL_S)

    async def _cursor(self) -> int:
        marks = (await self.store.call(STORE_SCHEDULE_MARKS, Empty())).marks
        if CURSOR in marks:
            return int(marks[CURSOR])
        cursor = (await self.store.call(STORE_EVENTS_AFTER, EventsAfter(after_id=None))).cursor  # from now on
        await self.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name=CURSOR, last_fire=cursor))
        return cursor

    async def poll(self, cursor: int) -> int:
        """Fire for the events after ``cursor``; the new cursor."""
        while True:
            page = await self.store.call(STORE_EVENTS_AFTER, EventsAfter(after_id=cursor))
            for record in page.records:
                await self.offer(record)
            if page.cursor != cursor:
                await self.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name=CURSOR, last_fire=page.cursor))
            cursor = page.cursor
            if len(page.records) < EventsAfter().limit:
                return cursor

    async def offer(self, event: MemoryRecord) -> None:
        metadata = event.metadata or {}
        topic = str(metadata.get("topic", ""))
        for schedule, pattern in self.watched:
            if pattern.fullmatch(topic):
                await self._fire(schedule, event, {"event": event.id, "device": event.source, "topic": topic,
                                                   "text": event.text, "at": event.created_at})
        entity_id, state = metadata.get("entity_id"), metadata.get("state")
        if not isinstance(entity_id, str):
            return
        for schedule, trigger in self.entities:
            if fnmatch.fnmatchcase(entity_id, trigger.pattern) and trigger.state in (None, state):
                await self._fire(schedule, event, {"event": event.id, "entity_id": entity_id, "state": state,
                                                   "text": event.text, "at": event.created_at})

    async def _fire(self, schedule: Schedule, event: MemoryRecord, given: JsonValue) -> None:
        """One task for ``schedule`` with the event as its input, unless inside its debounce window."""
        now = self.clock()
        if now - self.last_fire.get(schedule.name, -float("inf")) < schedule.debounce_s:
            self.debounced += 1
            return
        self.last_fire[schedule.name] = now
        task = await self.store.call(STORE_TASK_CREATE, TaskNew(
            spec=schedule.task(self.actions(), given=given), created_by=f"schedule:{schedule.name}",
            role=schedule.run_as, schedule=schedule.name, max_attempts=schedule.retries + 1))
        self.fired += 1
        self.log.info("schedule %s: event %d (%s) queued task %d", schedule.name, event.id, event.source, task.id,
                      extra={"SCHEDULE": schedule.name, "TASK": task.id})
        self.wake()
