"""Continuous batching: several generation streams share one loaded model and one llama_decode.

One thread owns the llama.cpp context. Each step it (1) drops cancelled streams, (2) admits
waiting jobs by priority into free slots while their KV reservation fits, (3) builds one batch
holding the next token of every generating stream plus prompt chunks of newly admitted ones,
(4) decodes it and samples each stream's next token from its own row of logits. A stream
therefore joins and leaves the batch between any two tokens, and a cancelled one is gone
before the next step.

KV cells are one pool (unified cache). A job reserves prompt + max_tokens cells (capped at the
context) when admitted, so admitted streams never run out mid-reply; jobs that do not fit wait.
The system-prompt prefix of the last job that had one is kept in a spare sequence, and a later
job with the same prefix shares those cells instead of decoding them again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from appliance.engine.errors import EngineBusy, EngineError, RequestRefused
from appliance.engine.llama import Batch, LlamaContext, LlamaModel
from appliance.engine.metrics import EngineCounters
from appliance.engine.sampling import GrammarError, Sampler, SamplingParams, TextStream
from appliance.protocol.engine import Priority

RANK = {p: i for i, p in enumerate(Priority)}  # lower runs first


@dataclass(frozen=True)
class Event:
    """What the decode thread reports to a stream: a piece of text, or the end."""

    text: str = ""
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    elapsed_ms: float = 0.0
    error: str | None = None


@dataclass(eq=False)
class GenerationJob:
    tokens: list[int]
    max_tokens: int
    sampling: SamplingParams
    stops: list[str]
    priority: Priority = Priority.INTERACTIVE
    prefix_len: int = 0  # leading tokens that are the system prompt, worth caching
    sampler: Sampler | None = None  # built (and its grammar compiled) before the job queues
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Slot:
    seq: int
    job: GenerationJob
    sampler: Sampler
    text: TextStream
    pending: list[int]  # prompt tokens not decoded yet
    reserved: int
    n_past: int = 0
    cached: int = 0
    last: int = -1
    generated: int = 0
    first_token_at: float = 0.0
    shares_prefix: bool = False  # holds cells of the current cached prefix


class Batcher:
    def __init__(self, model: LlamaModel, ctx: LlamaContext, *, n_slots: int, max_queue: int,
                 counters: EngineCounters) -> None:
        self.model, self.ctx, self.n_slots, self.max_queue = model, ctx, n_slots, max_queue
        self.counters = counters
        self._prefix_seq = n_slots  # the spare sequence holding the cached system prompt
        self._prefix: list[int] = []
        self._batch = Batch(ctx.settings.n_batch)
        self._slots: list[Slot] = []
        self._waiting: list[tuple[int, int, GenerationJob]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._avg_job_s = 2.0
        self._thread = threading.Thread(target=self._run, name="engine-decode", daemon=True)
        self._thread.start()

    # --- the async side ---------------------------------------------------------------------

    async def run(self, job: GenerationJob) -> AsyncGenerator[Event, None]:
        """Queue ``job`` and yield its events; leaving early cancels it within one token."""
        if len(job.tokens) + 1 > self.ctx.n_ctx:
            raise RequestRefused(f"prompt is {len(job.tokens)} tokens; the context holds {self.ctx.n_ctx} "
                             "tokens including at least one of reply")
        try:
            job.sampler = Sampler(self.model, job.sampling)
        except GrammarError as exc:
            raise RequestRefused(f"json_schema: {exc}") from None
        with self._wake:
            # Waiting jobs beyond the free slots are the queue (jobs also wait for KV cells).
            if len(self._waiting) >= self.max_queue + self.n_slots - len(self._slots):
                self.counters.rejected += 1
                job.sampler.close()
                retry = min(60.0, max(1.0, self._avg_job_s * (len(self._waiting) + 1) / self.n_slots))
                raise EngineBusy(f"engine busy: {len(self._slots)} streams running and {len(self._waiting)} "
                           f"waiting (resource.max_queue); retry after {retry:.0f} s", retry)
            heapq.heappush(self._waiting, (RANK[job.priority], next(self._order), job))
            self.counters.requests += 1
            self._wake.notify()
        try:
            while True:
                event = await job.events.get()
                if event.error is not None:
                    raise EngineError(event.error)
                yield event
                if event.done:
                    return
        finally:
            job.cancelled.set()
            with self._wake:
                self._wake.notify()

    def snapshot(self) -> tuple[int, int, int]:
        """(waiting, active, KV cells in use) for the metrics endpoint."""
        with self._wake:
            used = len(self._prefix) + sum(s.n_past - (s.cached if s.shares_prefix else 0) for s in self._slots)
            return len(self._waiting), len(self._slots), used

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)
        self._batch.close()

    # --- the decode thread ------------------------------------------------------------------

    def _send(self, job: GenerationJob, event: Event) -> None:
        self._loop.call_soon_threadsafe(job.events.put_nowait, event)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_cancelled()
                while not self._stopping and not self._slots and not self._waiting:
                    self._wake.wait()
                if self._stopping:
                    for slot in list(self._slots):
                        self._finish(slot, "cancelled")
                    for _, _, job in self._waiting:
                        self._send(job, Event(error="the engine is stopping"))
                    return
                self._admit()
            if self._slots:
                self._step()

    def _drop_cancelled(self) -> None:
        for slot in [s for s in self._slots if s.job.cancelled.is_set()]:
            self.counters.cancelled += 1
            self._release(slot)
        if any(job.cancelled.is_set() for _, _, job in self._waiting):
            for _, _, job in self._waiting:
                if job.cancelled.is_set() and job.sampler is not None:
                    job.sampler.close()
            self._waiting = [w for w in self._waiting if not w[2].cancelled.is_set()]
            heapq.heapify(self._waiting)

    def _reserved(self) -> int:
        return len(self._prefix) + sum(s.reserved for s in self._slots)

    def _admit(self) -> None:
        while self._waiting and len(self._slots) < self.n_slots:
            job = self._waiting[0][2]
            shared = self._shared_prefix(job)
            # Cells shared with the cached prefix are already counted in the prefix; if the cache
            # later moves on, _drop_prefix hands them to this stream's reservation.
            need = min(len(job.tokens) + job.max_tokens, self.ctx.n_ctx) - shared
            if self._slots and self._reserved() + need > self.ctx.n_ctx:
                return  # wait for a running stream to free its cells; keeps priority order
            heapq.heappop(self._waiting)
            if not self._slots and self._reserved() + need > self.ctx.n_ctx:
                self._drop_prefix()  # alone, a job may have the whole context
                need += shared
                shared = 0
            busy = {s.seq for s in self._slots}
            seq = next(i for i in range(self.n_slots) if i not in busy)
            assert job.sampler is not None
            slot = Slot(seq=seq, job=job, sampler=job.sampler, text=TextStream(job.stops),
                        pending=job.tokens[shared:], reserved=need, n_past=shared, cached=shared,
                        shares_prefix=shared > 0)
            if shared:
                self.ctx.share(self._prefix_seq, seq, shared)
                self.counters.prefix_hits += 1
            self._slots.append(slot)

    def _shared_prefix(self, job: GenerationJob) -> int:
        n = len(self._prefix)
        if not n or job.prefix_len < n or job.tokens[:n] != self._prefix:
            return 0
        return min(n, len(job.tokens) - 1)  # the last prompt token is decoded for its logits

    def _drop_prefix(self) -> None:
        if self._prefix:
            self.ctx.forget(self._prefix_seq)
            self._prefix = []
            for slot in self._slots:
                if slot.shares_prefix:
                    slot.reserved += slot.cached
                    slot.shares_prefix = False

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        rows: list[tuple[Slot, int]] = []
        prefill = 0
        for slot in self._slots:
            if not slot.pending:
                rows.append((slot, batch.add(slot.last, slot.n_past, slot.seq, True)))
                slot.n_past += 1
        for slot in self._slots:
            room = batch.capacity - batch.size
            if slot.pending and room > 0:
                chunk, slot.pending = slot.pending[:room], slot.pending[room:]
                for i, token in enumerate(chunk):
                    row = batch.add(token, slot.n_past + i, slot.seq, not slot.pending and i == len(chunk) - 1)
                slot.n_past += len(chunk)
                prefill += len(chunk)
                if not slot.pending:
                    rows.append((slot, row))
        started = time.perf_counter()
        status = batch.decode(self.ctx)
        spent = time.perf_counter() - started
        if status != 0:
            with self._wake:
                for slot in list(self._slots):
                    self._send(slot.job, Event(error=f"llama_decode failed with status {status}"))
                    self._release(slot)
            return
        self.counters.add_step(prefill, batch.size - prefill, spent)
        with self._wake:
            for slot, row in rows:
                if slot.job.cancelled.is_set():
                    continue
                self._cache_prefix(slot)
                self._advance(slot, slot.sampler.sample(self.ctx.ptr, row))

    def _cache_prefix(self, slot: Slot) -> None:
        n = slot.job.prefix_len
        if slot.generated or n < 8 or slot.cached or n >= len(slot.job.tokens):
            return
        if self._prefix == slot.job.tokens[:n]:
            return
        self._drop_prefix()
        self.ctx.share(slot.seq, self._prefix_seq, n)
        self._prefix = slot.job.tokens[:n]

    def _advance(self, slot: Slot, token: int) -> None:
        now = time.monotonic()
        if slot.generated == 0:
            slot.first_token_at = now
            self.counters.ttft(now - slot.job.submitted)
        slot.generated += 1
        self.counters.generated_tokens += 1
        slot.last = token
        if self.model.is_end(token):
            self._finish(slot, "stop")
            return
        text = slot.text.push(self.model.piece(token))
        if text:
            self._send(slot.job, Event(text=text))
        if slot.text.stopped:
            self._finish(slot, "stop")
        elif slot.generated >= slot.job.max_tokens or slot.n_past + 1 >= self.ctx.n_ctx:
            self._finish(slot, "length")

    def _finish(self, slot: Slot, reason: str) -> None:
        tail = slot.text.finish()
        if tail:
            self._send(slot.job, Event(text=tail))
        now = time.monotonic()
        self._send(slot.job, Event(
            done=True, finish_reason=reason, prompt_tokens=len(slot.job.tokens), cached_tokens=slot.cached,
            completion_tokens=slot.generated,
            ttft_ms=round((slot.first_token_at - slot.job.submitted) * 1000, 2) if slot.generated else 0.0,
            elapsed_ms=round((now - slot.job.submitted) * 1000, 2)))
        self.counters.completed += 1
        self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (now - slot.job.submitted)
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        self.ctx.forget(slot.seq)
        slot.sampler.close()
        self._slots.remove(slot)
