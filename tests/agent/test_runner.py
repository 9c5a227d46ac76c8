"""Tasks through the whole path: the agent process, a real store, a real broker, real bubblewrap.

The reference design's log_monitor runs as written (its check_logs.py finds errors and fails;
its send_alert fallback reaches the broker with the failure); the agent is SIGKILLed in the middle
of a running and a queued task and started again; the runner's concurrency policies are counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.agent.actions import Actions
from appliance.agent.runner import TaskRunner
from appliance.config import load_config
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from appliance.phrases import PhraseWire
from appliance.protocol.tasks import (
    STORE_SCHEDULE_MARK,
    STORE_TASK_CREATE,
    STORE_TASK_GET,
    STORE_TASKS,
    ScheduleMark,
    TaskDetail,
    TaskDetailQuery,
    TaskNew,
    TaskQuery,
    TaskSpec,
    TaskState,
)
from appliance.schedules.model import Schedule
from appliance.taskkinds.action import action_names
from tests.helpers import Publisher, eventually, eventually_async, pids_with, serve, update_config, wait_ready

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]

REFERENCE = """\
tasks:
  - name: "log_monitor"
    trigger: "cron:*/5 * * * *"
    action: "python check_logs.py"
    fallback: "send_alert"
"""
CHECK_LOGS = """\
import pathlib, sys
errors = [line for line in pathlib.Path("{log}").read_text().splitlines() if "ERROR" in line]
print(f"{{len(errors)}} errors in app.log: {{errors[-1] if errors else ''}}")
sys.exit(1 if errors else 0)
"""


def site(tmp_path: Path) -> dict[str, Any]:
    """The reference schedules file, its script and a log with two errors; the agent keys that use them."""
    scripts, logs = tmp_path / "scripts", tmp_path / "logs"
    scripts.mkdir()
    logs.mkdir()
    (scripts / "check_logs.py").write_text(CHECK_LOGS.format(log=logs / "app.log"))
    (logs / "app.log").write_text("12:00 INFO up\n12:01 ERROR disk full\n12:02 ERROR disk full again\n")
    for folder in (tmp_path, scripts, logs):  # the action is uid 65534: it must be able to read them
        folder.chmod(0o755)
    (tmp_path / "schedules.yaml").write_text(REFERENCE)
    return {"schedules_file": str(tmp_path / "schedules.yaml"), "scripts_dir": str(scripts),
            "command_readable": [str(logs)], "alert_topic": f"test/{tmp_path.name}/alerts"}


async def detail(peers: Peers, task_id: int) -> TaskDetail:
    return await peers.store.call(STORE_TASK_GET, TaskDetailQuery(id=task_id))


async def test_the_reference_log_monitor_fails_and_its_fallback_alerts(
        tmp_path: Path, config_file: Path, mosquitto: int, services: StartServices) -> None:
    agent = site(tmp_path)
    node = f"box_{tmp_path.name}"[:60]
    config = update_config(config_file, agent=agent, mqtt={"port": mosquitto, "home_assistant": {
        "enabled": True, "node_id": node, "discovery_prefix": f"ha_{node}", "state_interval_s": 3600}})
    peers = await services("store", "mqtt")
    # The box was off over the last */5 boundary: the agent's first act is that missed run.
    await peers.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name="log_monitor", last_fire=time.time() - 360))
    listener, home_assistant = Publisher(mosquitto, f"listener-{node}"), Publisher(mosquitto, f"ha-{node}")
    listener.subscribe(agent["alert_topic"])
    home_assistant.subscribe(config.mqtt.home_assistant.task_result_topic)
    agent_process = serve(config_file, "agent", log=tmp_path / "agent.log")  # degraded (no engine): fine here
    try:
        eventually(lambda: listener.received, 60, "the fallback's alert on the broker")
        eventually(lambda: len(home_assistant.received) == 2, 30, "both ends as Home Assistant events")
    finally:
        listener.close()
        home_assistant.close()
        agent_process.terminate()
        agent_process.wait(15)
    events = [json.loads(message.payload) for message in home_assistant.received]
    assert [(e["event_type"], e["kind"], e["schedule"]) for e in events] == [
        ("failed", "shell", "log_monitor"), ("succeeded", "action", None)]
    alert = json.loads(listener.received[0].payload)
    given = alert["data"]["input"]
    assert given["schedule"] == "log_monitor" and given["state"] == "failed"
    assert "2 errors in app.log: 12:02 ERROR disk full again" in given["result"]["stdout"]
    assert alert["text"].startswith("log_monitor failed: exit 1") and alert["kind"] == "alert"

    [fallback, monitor] = (await peers.store.call(STORE_TASKS, TaskQuery(limit=10))).items
    monitor_log = await detail(peers, monitor.id)
    assert (monitor.schedule, monitor.state, monitor.spec.argv) == ("log_monitor", TaskState.FAILED,
                                                                    ["python", "check_logs.py"])
    print("\nlog_monitor's step log:\n" + "\n".join(f"  {s.seq} {s.message}" for s in monitor_log.steps))
    assert [s.message for s in monitor_log.steps][-4:] == ["sandbox start", "sandbox end: exit 1", "failed",
                                                           "fallback queued"]
    assert monitor_log.steps[-3].phrase == PhraseWire(code="task.sandbox_end", args={"summary": "exit 1"})
    done = await eventually_async(lambda: _settled(peers, fallback.id), 30, "the fallback task to finish")
    assert (done.spec.action, done.state, done.created_by) == ("send_alert", TaskState.SUCCEEDED,
                                                               "schedule:log_monitor:fallback")


async def _settled(peers: Peers, task_id: int) -> Any:
    task = (await detail(peers, task_id)).task
    return task if task.state not in (TaskState.QUEUED, TaskState.RUNNING) else None


async def test_sigkill_mid_task_and_restart(tmp_path: Path, config_file: Path, services: StartServices) -> None:
    """One running (a sandboxed sleep) and one queued task (max_parallel_tasks 1) when the agent is
    SIGKILLed: the sandbox dies with it; after the restart the running one is failed with the
    reason, the queued one runs. Nothing vanishes."""
    update_config(config_file, agent={"max_parallel_tasks": 1})
    peers = await services("store")
    marker = f"marker-{uuid.uuid4().hex}"

    async def create(argv: list[str]) -> int:
        spec = TaskSpec(kind="shell", argv=argv)
        return (await peers.store.call(STORE_TASK_CREATE, TaskNew(spec=spec, created_by="test", role="admin"))).id

    running = await create(["sh", "-c", f"sleep 300; : {marker}"])
    queued = await create(["sh", "-c", "echo second"])
    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    try:
        eventually(lambda: pids_with(marker), 30, "the sandboxed sleep to start")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        eventually(lambda: not pids_with(marker), 10, "the sandbox to die with the agent")
        assert (await detail(peers, running)).task.state is TaskState.RUNNING  # nobody settled it yet
        assert (await detail(peers, queued)).task.state is TaskState.QUEUED
        agent = serve(config_file, "agent", log=tmp_path / "agent.log")
        first = await eventually_async(lambda: _settled(peers, running), 30, "the interrupted task to be settled")
        second = await eventually_async(lambda: _settled(peers, queued), 30, "the queued task to run")
    finally:
        agent.terminate()
        agent.wait(15)
    assert first.state is TaskState.FAILED and first.error.startswith("the agent stopped while this ran")
    assert second.state is TaskState.SUCCEEDED and second.result["stdout"] == "second\n"


async def test_a_task_ending_while_the_store_is_down_is_recorded_when_it_is_back(tmp_path: Path,
                                                                                 config_file: Path) -> None:
    """Found by make soak: the store SIGKILLed as a task finished left that task running for ever (the
    agent logged "could not record its end" and went on). Its last step and its end now wait for the
    store to come back, and the work done is not reported failed for want of their record."""
    store = serve(config_file, "store", log=tmp_path / "store.log")
    peers = Peers(load_config(config_file))
    agent = None
    marker = f"marker-{uuid.uuid4().hex}"
    try:
        await wait_ready(peers.store)
        made = await peers.store.call(STORE_TASK_CREATE, TaskNew(
            spec=TaskSpec(kind="shell", argv=["sh", "-c", f"sleep 2; echo done; : {marker}"]), created_by="test",
            role="admin"))
        agent = serve(config_file, "agent", log=tmp_path / "agent.log")
        eventually(lambda: pids_with(marker), 30, "the sandboxed task to start")
        os.kill(store.pid, signal.SIGKILL)
        store.wait(10)
        eventually(lambda: not pids_with(marker), 30, "the task to end while the store is down")
        eventually(lambda: "store unavailable" in (tmp_path / "agent.log").read_text(), 30,
                   "the agent to find the store away")
        store = serve(config_file, "store", log=tmp_path / "store.log")
        await wait_ready(peers.store)
        done = await eventually_async(lambda: _settled(peers, made.id), 30, "the task's end to be recorded")
    finally:
        for process in (agent, store):
            if process is not None:
                process.terminate()
                process.wait(15)
        await peers.close()
    assert done.state is TaskState.SUCCEEDED and done.result["stdout"] == "done\n", done


@pytest.mark.parametrize(("policy", "peak"), [("queue", 1), ("parallel", 2)])
async def test_concurrency_policies(config_file: Path, services: StartServices, policy: str, peak: int) -> None:
    """Four tasks of one schedule, each a sandboxed 0.5 s sleep: `queue` runs one at a time,
    `parallel` (max_parallel 2) two, though agent.max_parallel_tasks would allow four."""
    config = update_config(config_file, agent={"max_parallel_tasks": 4})
    peers = await services("store")
    schedule = Schedule.model_validate({"name": "s", "trigger": "interval:1h", "action": "sleep 0.5",
                                        "concurrency": policy, "max_parallel": 2})
    for _ in range(4):
        await peers.store.call(STORE_TASK_CREATE, TaskNew(spec=schedule.task(action_names(config)), created_by="test",
                                                          role="admin",
                                                          schedule="s"))
    log = logging.getLogger("test")
    runner = TaskRunner(config, peers.store, Actions(config, Dispatcher(default_table(), peers, config, log), log),
                        lambda: {"s": schedule}, log)
    work = asyncio.create_task(runner.run())
    seen = 0

    async def all_done() -> bool:
        nonlocal seen
        seen = max(seen, len(runner.running))
        page = await peers.store.call(STORE_TASKS, TaskQuery(state=[TaskState.SUCCEEDED]))
        return len(page.items) == 4

    try:
        await eventually_async(all_done, 60, "four tasks to succeed", every_s=0.02)
    finally:
        work.cancel()
        await runner.stop()
    assert seen == peak
