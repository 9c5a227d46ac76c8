"""Periodic jobs on the event loop: fixed-rate ticks, no drift, no overlap, clean cancel.

A job that overruns its interval skips the ticks it missed instead of running back to back;
a job that raises is logged and counted, and runs again at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Action = Callable[[], Awaitable[None]]


@dataclass
class PeriodicJob:
    name: str
    interval_s: float
    action: Action
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Periodic:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.jobs: dict[str, PeriodicJob] = {}

    def every(self, name: str, interval_s: float, action: Action) -> PeriodicJob:
        if name in self.jobs:
            raise ValueError(f"job {name!r} is already scheduled")
        if interval_s <= 0:
            raise ValueError(f"job {name!r}: interval must be positive, got {interval_s}")
        job = self.jobs[name] = PeriodicJob(name, interval_s, action)
        job.task = asyncio.create_task(self._run(job), name=f"job:{name}")
        return job

    async def _run(self, job: PeriodicJob) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                await job.action()
            except Exception as exc:
                job.failures += 1
                job.last_error = str(exc)
                self._log.exception("job %s failed", job.name, extra={"JOB": job.name})
            job.runs += 1
            due += job.interval_s
            now = loop.time()
            if now > due:  # overran: skip to the next tick still in the future
                missed = int((now - due) // job.interval_s) + 1
                job.skipped += missed
                due += missed * job.interval_s
            await asyncio.sleep(due - now)

    async def stop(self) -> None:
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
