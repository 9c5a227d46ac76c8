"""The agent service: tasks (the runner), schedules (the scheduler for the clock, the event triggers
for device events), and periodic jobs: a heartbeat over the others, the daily archive run, backfill.

Jobs that change memory go through the command table like any other caller (as
``agent:periodic`` with the operator role), so they are checked and audited the same way.
"""

from __future__ import annotations

import asyncio
import contextlib

from appliance.agent.actions import Actions
from appliance.agent.periodic import Periodic
from appliance.agent.runner import TaskRunner
from appliance.agent.scheduler import Scheduler
from appliance.agent.schedules import Schedule, load_schedules
from appliance.agent.watch import EventTriggers
from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.memory import Backfilled
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.server import IpcServer
from appliance.protocol.common import (
    HEALTH,
    Agent,
    Changed,
    Empty,
    MetricFamily,
    MetricSample,
    ServiceName,
    ServiceState,
)
from appliance.protocol.services import BY_NAME
from appliance.protocol.store import ArchiveProgress
from appliance.protocol.tasks import AGENT_CANCEL, AGENT_WAKE, TaskId, TaskRow, TaskState
from appliance.runtime.service import Service

WATCHED = BY_NAME["agent"].depends_on
JOBS = Caller("agent:periodic", Role.OPERATOR, "agent")


class AgentService(Service[Agent]):
    name = "agent"

    periodic: Periodic | None = None
    beats = 0

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self.commands = Dispatcher(default_table(), self.peers, config, self.log)
        # A broken schedules file stops the agent here, with the schedule and key named (exit 2).
        file = config.agent.schedules_file
        self.schedules: list[Schedule] = load_schedules(file) if file is not None else []
        by_name = {schedule.name: schedule for schedule in self.schedules}
        self.actions = Actions(config, self.commands)
        self.runner = TaskRunner(config, self.peers.store, self.actions, lambda: by_name, self.log, self.announce)
        self.scheduler = Scheduler(self.schedules, self.peers.store, self.actions.names, self.runner.wake.set,
                                   self.log)
        self.events = EventTriggers(self.schedules, self.peers.store, self.actions.names, self.runner.wake.set,
                                    self.log)
        self._loops: list[asyncio.Task[None]] = []

    def register(self, ipc: IpcServer[Agent]) -> None:
        async def wake(_: Empty) -> Empty:
            self.runner.wake.set()
            return Empty()

        async def cancel(request: TaskId) -> Changed:
            return Changed(changed=int(await self.runner.cancel(request.id)))

        ipc.add(AGENT_WAKE, wake)
        ipc.add(AGENT_CANCEL, cancel)

    async def start(self) -> None:
        self._loops = [asyncio.create_task(self.runner.run(), name="task-runner"),
                       asyncio.create_task(self.scheduler.run(), name="scheduler"),
                       asyncio.create_task(self.events.run(), name="event-triggers")]
        self.periodic = Periodic(self.log)
        self.periodic.every("heartbeat", self.config.agent.heartbeat_interval_s, self.heartbeat)
        self.periodic.every("archive", self.config.memory.archive_interval_s, self.archive)
        self.periodic.every("embed-backfill", self.config.agent.backfill_interval_s, self.backfill)

    async def stop(self) -> None:
        if self.periodic is not None:
            await self.periodic.stop()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.runner.stop()

    async def collect_metrics(self) -> list[MetricFamily]:
        jobs = list(self.periodic.jobs.values()) if self.periodic else []
        return [MetricFamily(name=f"appliance_agent_job_{what}_total", kind="counter", help=text,
                             samples=[MetricSample(labels={"job": job.name}, value=getattr(job, what)) for job in jobs])
                for what, text in (("runs", "periodic job runs"), ("failures", "periodic job runs that failed"),
                                   ("skipped", "ticks skipped because the job overran"))] + [
            MetricFamily(name="appliance_agent_schedule_fires_total", kind="counter",
                         help="schedule fires by outcome (skipped: the previous run was not done; "
                              "debounced: an event inside an mqtt: schedule's debounce window)",
                         samples=[MetricSample(labels={"outcome": "queued"},
                                               value=self.scheduler.fired + self.events.fired),
                                  MetricSample(labels={"outcome": "skipped"}, value=self.scheduler.skipped),
                                  MetricSample(labels={"outcome": "debounced"}, value=self.events.debounced)]),
            MetricFamily(name="appliance_agent_tasks_finished_total", kind="counter", help="tasks by how they ended",
                         samples=[MetricSample(labels={"state": state}, value=count)
                                  for state, count in sorted(self.runner.finished.items())])]

    async def _state_of(self, name: ServiceName) -> str | None:
        """None when the peer is fine, else a short reason."""
        try:
            health = await self.peer(name).call(HEALTH, timeout_s=2.0)
        except IpcError as exc:
            return str(exc)
        return None if health.state is ServiceState.READY else f"{name} {health.state.value}"

    async def heartbeat(self) -> None:
        self.beats += 1
        problems = [p for p in await asyncio.gather(*(self._state_of(n) for n in WATCHED)) if p]
        self.log.debug("heartbeat %d", self.beats, extra={"HEARTBEAT": self.beats})
        if problems:
            self.set_state(ServiceState.DEGRADED, "; ".join(problems))
        else:
            self.set_state(ServiceState.READY, f"heartbeat every {self.config.agent.heartbeat_interval_s:g} s")

    async def announce(self, task: TaskRow, state: TaskState, error: str) -> None:
        """A task's end as Home Assistant's task_result event (best effort: the store has the record)."""
        home_assistant = self.config.mqtt.home_assistant
        if not home_assistant.enabled:
            return
        event = {"event_type": state.value, "task": task.id, "kind": task.spec.kind, "schedule": task.schedule,
                 "error": error or None}
        try:
            await self.commands.call("devices.publish", {"topic": home_assistant.task_result_topic,
                                                         "payload": event}, JOBS)
        except (CommandError, IpcError) as exc:
            self.log.debug("task %d: its end was not announced to Home Assistant (%s)", task.id, exc)

    async def archive(self) -> None:
        """Move memories older than memory.archive_after_days into the archive tier."""
        last = None
        async with contextlib.aclosing(self.commands.stream("memory.archive", {}, JOBS)) as progress:
            async for item in progress:
                last = item
        if isinstance(last, ArchiveProgress) and last.done:
            self.log.info("archive run: %d memories into %d segments", last.done, last.segments,
                          extra={"ARCHIVED": last.done})

    async def backfill(self) -> None:
        """Embed memories that were stored while the engine was down."""
        reply = await self.commands.call("memory.backfill", {}, JOBS)
        if isinstance(reply, Backfilled) and reply.embedded:
            self.log.info("embedded %d memories stored without a vector", reply.embedded,
                          extra={"BACKFILLED": reply.embedded})
