"""The scheduler on a simulated clock against a real store process: when schedules fire, what a
fire queues, runs missed while the box was off, and the skip policy.

The clock is simulated (the scheduler's own clock and sleep parameters): a sleep moves it on at
once, so twenty minutes of cron run in milliseconds and fire times are exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.agent.scheduler import Scheduler
from appliance.ipc.peers import Peers
from appliance.protocol.common import Empty
from appliance.protocol.tasks import STORE_SCHEDULE_MARK, STORE_SCHEDULE_MARKS, STORE_TASKS, ScheduleMark, TaskQuery
from appliance.schedules.model import Schedule

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]
NOON = datetime(2026, 11, 21, 12, 3, 10, tzinfo=UTC)


class Finished(Exception):
    """The simulated clock ran past its end."""


class SimulatedClock:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.now = start.timestamp()
        self.end = end.timestamp()
        self.fires: list[datetime] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self.end:
            raise Finished
        await asyncio.sleep(0)

    def woken(self) -> None:
        self.fires.append(datetime.fromtimestamp(self.now, UTC))


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate({"name": "log_monitor", "trigger": "cron:*/5 * * * *",
                                    "action": "python check_logs.py", "fallback": "send_alert", **fields})


async def run(peers: Peers, schedules: list[Schedule], start: datetime, minutes: float) -> tuple[Scheduler,
                                                                                                  SimulatedClock]:
    clock = SimulatedClock(start, start + timedelta(minutes=minutes))
    scheduler = Scheduler(schedules, peers.store, set, clock.woken, logging.getLogger("test"), clock=clock.time,
                          sleep=clock.sleep)
    with pytest.raises(Finished):
        await scheduler.run()
    return scheduler, clock


async def tasks_of(peers: Peers, name: str) -> list[Any]:
    return (await peers.store.call(STORE_TASKS, TaskQuery(schedule=name, limit=500))).items


async def test_cron_interval_and_at_fire_on_time(services: StartServices) -> None:
    peers = await services("store")
    reference = schedule(concurrency="queue")  # nothing runs the tasks here: skip would skip every later fire
    _, clock = await run(peers, [reference], NOON, 18)
    assert clock.fires == [NOON.replace(minute=m, second=0) for m in (5, 10, 15, 20)]
    queued = await tasks_of(peers, "log_monitor")
    assert len(queued) == 4
    assert {(t.spec.kind, tuple(t.spec.argv), t.spec.priority, t.role) for t in queued} == {
        ("shell", ("python", "check_logs.py"), "scheduled", "admin")}
    marks = (await peers.store.call(STORE_SCHEDULE_MARKS, Empty())).marks
    assert marks["log_monitor"] == NOON.replace(minute=20, second=0).timestamp()

    every = schedule(name="every", trigger="interval:90", concurrency="queue")
    once = schedule(name="once", trigger=f"at:{(NOON + timedelta(minutes=2)).isoformat()}")
    _, clock = await run(peers, [every, once], NOON, 5)
    assert clock.fires == sorted([NOON + timedelta(seconds=90 * n) for n in (1, 2, 3)]
                                 + [NOON + timedelta(minutes=2)])
    assert len(await tasks_of(peers, "once")) == 1


@pytest.mark.parametrize(("missed", "expected"), [("skip", 0), ("once", 1), ("all", 5)])
async def test_runs_missed_while_the_box_was_off(services: StartServices, missed: str, expected: int) -> None:
    """Off from 10:00 to 12:03: eight quarter-hour fires were missed."""
    peers = await services("store")
    quarterly = schedule(trigger="cron:*/15 * * * *", missed=missed, missed_max=5, concurrency="queue")
    off = NOON.replace(hour=10, minute=0, second=0)
    await peers.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name="log_monitor", last_fire=off.timestamp()))
    scheduler, clock = await run(peers, [quarterly], NOON, 0)
    assert clock.fires == ([NOON] if expected else [])  # caught up at start, in one batch
    last = (await peers.store.call(STORE_SCHEDULE_MARKS, Empty())).marks["log_monitor"]
    assert last == (off if missed == "skip" else NOON.replace(minute=0, second=0)).timestamp()
    assert len(await tasks_of(peers, "log_monitor")) == scheduler.fired == expected


async def test_skip_policy_fires_nothing_while_the_last_run_is_not_done(services: StartServices) -> None:
    peers = await services("store")
    scheduler, _ = await run(peers, [schedule()], NOON, 18)  # concurrency: skip is the default
    assert (scheduler.fired, scheduler.skipped) == (1, 3)
    assert len(await tasks_of(peers, "log_monitor")) == 1
