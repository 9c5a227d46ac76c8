from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.agent.periodic import Periodic


async def test_runs_at_its_interval_and_survives_failures() -> None:
    periodic = Periodic(logging.getLogger("test"))
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("sensor offline")

    job = periodic.every("flaky", 0.05, flaky)
    await asyncio.sleep(0.32)
    await periodic.stop()
    assert 5 <= job.runs <= 8
    assert job.failures == 1 and job.last_error == "sensor offline"
    assert job.task is not None and job.task.cancelled()


async def test_overrun_skips_ticks_instead_of_piling_up() -> None:
    periodic = Periodic(logging.getLogger("test"))

    async def slow() -> None:
        await asyncio.sleep(0.12)

    job = periodic.every("slow", 0.05, slow)
    await asyncio.sleep(0.5)
    await periodic.stop()
    assert job.skipped >= 2
    assert job.runs <= 5


async def test_bad_schedules_are_refused() -> None:
    periodic = Periodic(logging.getLogger("test"))

    async def noop() -> None:
        return None

    periodic.every("a", 1, noop)
    with pytest.raises(ValueError, match="already scheduled"):
        periodic.every("a", 1, noop)
    with pytest.raises(ValueError, match="interval must be positive"):
        periodic.every("b", 0, noop)
    await periodic.stop()
