"""Blocking work off the event loop, in daemon threads.

llama.cpp calls cannot be interrupted, so they run in daemon threads: a process told to stop
while a model loads can still exit on time instead of waiting for the load to finish.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def in_daemon_thread(work: Callable[[], T], name: str = "worker") -> asyncio.Future[T]:
    """Run ``work`` in a new daemon thread; the returned future settles on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = work()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
