"""Embedding requests that arrive together are encoded together.

Requests that arrive while a batch is being encoded wait and then share the next one: under load,
one pass of the model embeds many callers' texts instead of one each. The pass runs in a daemon
worker thread (llama.cpp and NumPy release the GIL), so the event loop never blocks; each caller
gets its own vectors back, in order, or the pass's error. A request whose IPC caller has stopped
waiting by the time its turn comes is not encoded (ipc/deadline.py): under overload the queue
drains instead of encoding texts nobody will read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from appliance.engine.metrics import EngineCounters
from appliance.ipc import deadline as ipc_deadline
from appliance.runtime.threads import in_daemon_thread

Vectors = list[list[float]]


class SharedBatches:
    def __init__(self, encode: Callable[[list[str]], Vectors], max_texts: int, thread_name: str,
                 counters: EngineCounters | None = None) -> None:
        self._encode, self._max_texts, self._thread_name = encode, max_texts, thread_name
        self._counters = counters
        self._waiting: list[tuple[list[str], asyncio.Future[Vectors], float | None]] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> Vectors:
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        self._waiting.append((texts, future, ipc_deadline.current()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name=self._thread_name)
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            taken: list[tuple[list[str], asyncio.Future[Vectors]]] = []
            total = 0
            while self._waiting and (not taken or total + len(self._waiting[0][0]) <= self._max_texts):
                texts, future, deadline = self._waiting.pop(0)
                if ipc_deadline.passed(deadline):
                    if self._counters is not None:
                        self._counters.embed_skipped_late += 1
                    if not future.done():
                        future.set_exception(ipc_deadline.DeadlinePassed("the caller stopped waiting"))
                    continue
                total += len(texts)
                taken.append((texts, future))
            if not taken:
                continue
            everything = [text for texts, _ in taken for text in texts]
            try:
                vectors = await in_daemon_thread(functools.partial(self._encode, everything), self._thread_name)
            except Exception as exc:  # every waiter of this batch gets the reason; the next batch still runs
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for texts, future in taken:
                if not future.done():
                    future.set_result(vectors[start : start + len(texts)])
                start += len(texts)
