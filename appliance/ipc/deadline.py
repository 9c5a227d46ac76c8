"""A call's deadline, carried from the caller to the work it asked for.

The client sends how long it will wait for the answer (DEADLINE_HEADER, in seconds); the server
turns that into a moment on its own monotonic clock and keeps it, for that request only, in a
context variable. Work that queues behind one thread (the store's SQLite thread) looks at it
before it starts: once the caller has stopped waiting, nobody will read the answer.

Why it matters: aiohttp lets a handler run on after its client has gone, so without this a queue
that once falls 10 s behind stays behind. Every caller times out and retries (the mqtt bridge its
batch, the agent its step), each retry queues the same work again behind the abandoned copies, and
the service does only work whose answers nobody reads. `make soak` met exactly that: after a broker
restart the store answered nothing in time for the rest of the run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar

from appliance.ipc.errors import DeadlinePassed

__all__ = ["DEADLINE_HEADER", "DeadlinePassed", "caller_waits_until", "current", "parse_header", "passed"]

DEADLINE_HEADER = "X-Ipc-Deadline-S"
MAX_DEADLINE_S = 24 * 3600.0  # a longer (or malformed) wait is taken as "no deadline", never as an error

_deadline: ContextVar[float | None] = ContextVar("ipc_deadline", default=None)


def parse_header(value: str | None, now: float | None = None) -> float | None:
    """The monotonic moment a header's wait ends; None for no header or a value that is not a
    positive, finite number of seconds up to MAX_DEADLINE_S."""
    if value is None or len(value) > 32:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DEADLINE_S):
        return None
    return (time.monotonic() if now is None else now) + seconds


@contextlib.contextmanager
def caller_waits_until(deadline: float | None) -> Iterator[None]:
    """Within this block (one request's handler), ``current()`` is ``deadline``."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def current() -> float | None:
    """The deadline of the request being handled; None outside one, or when its caller sent none.

    Read it in the handler's own task and hand it to a thread: run_in_executor does not carry
    context variables."""
    return _deadline.get()


def passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline
