"""mqtt: triggers: device events through a real broker and the mqtt service start a schedule's task,
once per debounce window; the debounce itself on a simulated clock."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.agent.watch import CURSOR, EventTriggers
from appliance.ipc.peers import Peers
from appliance.protocol.common import Empty
from appliance.protocol.devices import STORE_EVENTS, STORE_EVENTS_AFTER, EventBatch, EventIn, EventsAfter
from appliance.protocol.tasks import STORE_SCHEDULE_MARKS, STORE_TASKS, TaskQuery, TaskState
from appliance.schedules.model import Schedule
from tests.helpers import Publisher, eventually, eventually_async, serve, update_config

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]
DOOR_WATCH = """\
tasks:
  - name: "door_watch"
    trigger: "mqtt:devices/+/events"
    action: "send_alert"
    debounce_s: 600
"""


async def test_a_burst_of_events_starts_one_task(tmp_path: Path, config_file: Path, mosquitto: int,
                                                 services: StartServices) -> None:
    (tmp_path / "schedules.yaml").write_text(DOOR_WATCH)
    alerts = f"test/{tmp_path.name}/alerts"
    update_config(config_file, mqtt={"port": mosquitto},
                  agent={"schedules_file": str(tmp_path / "schedules.yaml"), "alert_topic": alerts})
    peers = await services("store", "mqtt")
    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    device, listener = Publisher(mosquitto, f"door-{tmp_path.name}"), Publisher(mosquitto, f"ear-{tmp_path.name}")
    try:
        listener.subscribe(alerts)
        # The agent's cursor starts where the store is when it first runs: wait for that.
        async def placed() -> bool:
            return await _cursor(peers) is not None

        await eventually_async(placed, 30, "the agent to place its event cursor")
        for i in range(5):
            device.publish("devices/door-1/events", json.dumps({"id": f"burst-{i}", "type": "door.open", "value": i}))
        eventually(lambda: listener.received, 30, "the alert of the task the burst started")
        newest = (await peers.store.call(STORE_EVENTS_AFTER, EventsAfter(after_id=None))).cursor

        async def read_all() -> bool:
            return (await _cursor(peers) or 0) >= newest

        await eventually_async(read_all, 30, "the agent to read all five events")

        async def settled() -> bool:  # the alert went out before the task's end is recorded
            tasks = (await peers.store.call(STORE_TASKS, TaskQuery(schedule="door_watch"))).items
            return bool(tasks) and all(task.state is not TaskState.RUNNING for task in tasks)

        await eventually_async(settled, 30, "the task's end to be recorded")
    finally:
        device.close()
        listener.close()
        agent.terminate()
        agent.wait(15)
    tasks = (await peers.store.call(STORE_TASKS, TaskQuery(schedule="door_watch"))).items
    assert len(tasks) == 1 and tasks[0].state is TaskState.SUCCEEDED
    given: Any = tasks[0].spec.input
    assert given["device"] == "door-1" and "burst-0" in given["text"]
    assert json.loads(listener.received[0].payload)["data"]["input"]["topic"] == "devices/door-1/events"


async def _cursor(peers: Peers) -> float | None:
    return (await peers.store.call(STORE_SCHEDULE_MARKS, Empty())).marks.get(CURSOR)


async def test_debounce_windows_on_a_simulated_clock(services: StartServices) -> None:
    peers = await services("store")
    now = [1000.0]
    watch = Schedule.model_validate({"name": "w", "trigger": "mqtt:devices/+/events", "action": "send_alert",
                                     "debounce_s": 60})
    other = Schedule.model_validate({"name": "o", "trigger": "mqtt:devices/boiler/#", "action": "send_alert",
                                     "debounce_s": 0})
    triggers = EventTriggers([watch, other], peers.store, set, lambda: None, logging.getLogger("test"),
                             clock=lambda: now[0])
    cursor = (await peers.store.call(STORE_EVENTS_AFTER, EventsAfter(after_id=None))).cursor
    arrived: list[float] = []

    async def arrive(topic: str, at: float) -> None:
        nonlocal cursor
        now[0] = at
        arrived.append(at)
        device = topic.split("/")[1]
        await peers.store.call(STORE_EVENTS, EventBatch(events=[EventIn(
            device=device, topic=topic, key=f"h:{len(arrived)}", text=f"{{\"at\": {at}}}", received_at=at)]))
        cursor = await triggers.poll(cursor)

    for at in (1000, 1010, 1059):  # one window
        await arrive("devices/door-1/events", at)
    await arrive("devices/door-1/events", 1061)  # the next
    await arrive("devices/boiler/state", 1062)  # only `o` (debounce 0) watches this
    await arrive("devices/boiler/state", 1062)
    assert (triggers.fired, triggers.debounced) == (4, 2)
    tasks: list[Any] = (await peers.store.call(STORE_TASKS, TaskQuery())).items
    by_schedule = [(t.schedule, t.spec.input["at"]) for t in reversed(tasks)]
    assert by_schedule == [("w", 1000), ("w", 1061), ("o", 1062), ("o", 1062)]
