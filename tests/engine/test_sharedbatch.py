"""engine/sharedbatch.py with a plain Python encoder in place of a model (the batching and the
deadline skip are what is under test, not the vectors)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from appliance.engine.metrics import EngineCounters
from appliance.engine.sharedbatch import SharedBatches
from appliance.ipc import deadline as ipc_deadline


class Recorder:
    """An encoder that records the texts of each pass; the first pass waits for ``gate``."""

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def encode(self, texts: list[str]) -> list[list[float]]:
        self.entered.set()
        if not self.passes:
            self.gate.wait(10)
        self.passes.append(list(texts))
        return [[float(len(t))] for t in texts]


async def _embed_with_deadline(batches: SharedBatches, text: str, deadline: float | None) -> list[list[float]]:
    with ipc_deadline.caller_waits_until(deadline):
        return await batches.embed([text])


async def test_callers_that_arrive_together_share_a_pass() -> None:
    recorder = Recorder()
    recorder.gate.set()
    batches = SharedBatches(recorder.encode, 64, "test-embed")
    first = asyncio.create_task(batches.embed(["a"]))
    await asyncio.sleep(0)
    rest = await asyncio.gather(*(batches.embed(["bb" * i]) for i in range(1, 4)))
    assert await first == [[1.0]] and rest == [[[2.0]], [[4.0]], [[6.0]]]
    assert len(recorder.passes) <= 2


async def test_texts_whose_caller_gave_up_while_waiting_are_not_encoded() -> None:
    recorder, counters = Recorder(), EngineCounters()
    batches = SharedBatches(recorder.encode, 64, "test-embed", counters)
    first = asyncio.create_task(batches.embed(["held"]))  # its pass holds the encoder until the gate opens
    await asyncio.to_thread(recorder.entered.wait, 10)
    late_by = time.monotonic() + 0.05
    late = asyncio.create_task(_embed_with_deadline(batches, "late", late_by))
    patient = asyncio.create_task(_embed_with_deadline(batches, "patient", time.monotonic() + 60))
    await asyncio.sleep(max(0.0, late_by - time.monotonic()) + 0.01)  # it passes while the encoder is busy
    recorder.gate.set()
    assert await first == [[4.0]]
    assert await patient == [[7.0]]
    with pytest.raises(ipc_deadline.DeadlinePassed):
        await late
    assert "late" not in [t for texts in recorder.passes for t in texts]
    assert counters.embed_skipped_late == 1
