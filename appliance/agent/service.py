"""The agent service: tasks (the runner), schedules (the scheduler for the clock, the event triggers
for device events), and periodic jobs: a heartbeat over the others, the daily archive run, backfill.

Schedules come from the schedules file (read once: a broken file stops the agent, naming the
schedule and key) and from the store (saved through the commands; read at start and whenever
the command layer says one changed). A reload restarts the clock and event loops with the new
set; counts and debounce windows carry over.

Jobs that change memory go through the command table like any other caller (as
``agent:periodic`` with the operator role), so they are checked and audited the same way.
"""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import ValidationError

from appliance.agent.actions import Actions
from appliance.agent.periodic import Periodic
from appliance.agent.runner import TaskRunner
from appliance.agent.scheduler import Scheduler
from appliance.agent.watch import EventTriggers
from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.memory import Backfilled
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.server import IpcServer
from appliance.phrases import Phrase
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
from appliance.protocol.schedules import AGENT_SCHEDULES_RELOAD, STORE_SCHEDULES
from appliance.protocol.services import BY_NAME
from appliance.protocol.store import ArchiveProgress
from appliance.protocol.tasks import AGENT_CANCEL, AGENT_WAKE, TaskId, TaskRow, TaskState
from appliance.runtime.service import Service
from appliance.schedules.model import Schedule, load_schedules

WATCHED = BY_NAME["agent"].depends_on
JOBS = Caller("agent:periodic", Role.OPERATOR, "agent")


class AgentService(Service[Agent]):
    name = "agent"

    periodic: Periodic | None = None
    beats = 0

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self.dispatcher = Dispatcher(default_table(), self.peers, config, self.log)
        # A broken schedules file stops the agent here, with the schedule and key named (exit 2).
        file = config.agent.schedules_file
        self.file_schedules = load_schedules(file) if file is not None else []
        self.schedules: dict[str, Schedule] = {schedule.name: schedule for schedule in self.file_schedules}
        self.actions = Actions(config, self.dispatcher, self.log)
        self.runner = TaskRunner(config, self.peers.store, self.actions, lambda: self.schedules, self.log,
                                 self.announce)
        self.scheduler = self._scheduler([])
        self.events = self._event_triggers([])
        self._loops: list[asyncio.Task[None]] = []
        self._schedule_loops: list[asyncio.Task[None]] = []
        self._reloading = asyncio.Lock()

    def register(self, ipc: IpcServer[Agent]) -> None:
        async def wake(_: Empty) -> Empty:
            self.runner.wake.set()
            return Empty()

        async def cancel(request: TaskId) -> Changed:
            return Changed(changed=int(await self.runner.cancel(request.id)))

        async def reload(_: Empty) -> Changed:
            return Changed(changed=await self.reload_schedules())

        ipc.add(AGENT_WAKE, wake)
        ipc.add(AGENT_CANCEL, cancel)
        ipc.add(AGENT_SCHEDULES_RELOAD, reload)

    async def start(self) -> None:
        self._loops = [asyncio.create_task(self.runner.run(), name="task-runner"),
                       asyncio.create_task(self._first_load(), name="schedules-load")]
        self.periodic = Periodic(self.log)
        self.periodic.every("heartbeat", self.config.agent.heartbeat_interval_s, self.heartbeat)
        self.periodic.every("archive", self.config.memory.archive_interval_s, self.archive)
        self.periodic.every("embed-backfill", self.config.agent.backfill_interval_s, self.backfill)

    async def stop(self) -> None:
        if self.periodic is not None:
            await self.periodic.stop()
        for loop in self._loops + self._schedule_loops:
            loop.cancel()
        await asyncio.gather(*self._loops, *self._schedule_loops, return_exceptions=True)
        await self.runner.stop()

    def _scheduler(self, schedules: list[Schedule]) -> Scheduler:
        return Scheduler(schedules, self.peers.store, self.actions.names, self.runner.wake.set, self.log)

    def _event_triggers(self, schedules: list[Schedule]) -> EventTriggers:
        return EventTriggers(schedules, self.peers.store, self.actions.names, self.runner.wake.set, self.log)

    async def _first_load(self) -> None:
        while True:
            try:
                await self.reload_schedules()
                return
            except IpcError as exc:
                self.log.warning("cannot read the saved schedules yet (%s); trying again", exc)
                await asyncio.sleep(2.0)

    async def reload_schedules(self) -> int:
        """Run the file's schedules and the saved ones (a saved one the file also names is ignored:
        the file wins); how many there are."""
        async with self._reloading:
            schedules = dict((schedule.name, schedule) for schedule in self.file_schedules)
            for item in (await self.peers.store.call(STORE_SCHEDULES, Empty())).items:
                try:
                    saved = Schedule.of_saved(item)
                except ValidationError as exc:
                    self.log.warning("saved schedule %s is not valid and does not run: %s", item.name, exc)
                    continue
                if schedules.setdefault(item.name, saved) is not saved:
                    self.log.warning("saved schedule %s does not run: the schedules file names one the same",
                                     item.name)
            for loop in self._schedule_loops:
                loop.cancel()
            await asyncio.gather(*self._schedule_loops, return_exceptions=True)
            running = list(schedules.values())
            scheduler, events = self._scheduler(running), self._event_triggers(running)
            scheduler.fired, scheduler.skipped = self.scheduler.fired, self.scheduler.skipped
            events.fired, events.debounced, events.last_fire = self.events.fired, self.events.debounced, \
                self.events.last_fire
            self.schedules, self.scheduler, self.events = schedules, scheduler, events
            self._schedule_loops = [asyncio.create_task(scheduler.run(), name="scheduler"),
                                    asyncio.create_task(events.run(), name="event-triggers")]
            self.log.info("running %d schedules (%d from the file)", len(schedules), len(self.file_schedules))
            return len(schedules)

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

    async def _state_of(self, name: ServiceName) -> Phrase | None:
        """None when the peer is fine, else a short reason."""
        try:
            health = await self.peer(name).call(HEALTH, timeout_s=2.0)
        except IpcError as exc:
            return Phrase("agent.peer_unreachable", service=name, why=str(exc))
        return None if health.state is ServiceState.READY else \
            Phrase("agent.peer_not_ready", service=name, state=health.state.value)

    async def heartbeat(self) -> None:
        self.beats += 1
        problems = [p for p in await asyncio.gather(*(self._state_of(n) for n in WATCHED)) if p]
        self.log.debug("heartbeat %d", self.beats, extra={"HEARTBEAT": self.beats})
        if problems:
            self.set_state(ServiceState.DEGRADED, *problems)
        else:
            self.set_state(ServiceState.READY,
                           Phrase("agent.ready", every_s=f"{self.config.agent.heartbeat_interval_s:g}"))

    async def announce(self, task: TaskRow, state: TaskState, error: str) -> None:
        """A task's end as Home Assistant's task_result event (best effort: the store has the record)."""
        home_assistant = self.config.mqtt.home_assistant
        if not home_assistant.enabled:
            return
        event = {"event_type": state.value, "task": task.id, "kind": task.spec.kind, "schedule": task.schedule,
                 "error": error or None}
        try:
            await self.dispatcher.call("devices.publish", {"topic": home_assistant.task_result_topic,
                                                         "payload": event}, JOBS)
        except (CommandError, IpcError) as exc:
            self.log.debug("task %d: its end was not announced to Home Assistant (%s)", task.id, exc)

    async def archive(self) -> None:
        """Move memories older than memory.archive_after_days into the archive tier."""
        last = None
        async with contextlib.aclosing(self.dispatcher.stream("memory.archive", {}, JOBS)) as progress:
            async for item in progress:
                last = item
        if isinstance(last, ArchiveProgress) and last.done:
            self.log.info("archive run: %d memories into %d segments", last.done, last.segments,
                          extra={"ARCHIVED": last.done})

    async def backfill(self) -> None:
        """Embed memories that were stored while the engine was down."""
        reply = await self.dispatcher.call("memory.backfill", {}, JOBS)
        if isinstance(reply, Backfilled) and reply.embedded:
            self.log.info("embedded %d memories stored without a vector", reply.embedded,
                          extra={"BACKFILLED": reply.embedded})
