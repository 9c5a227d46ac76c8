"""The sd_notify protocol, sending side: readiness, status, watchdog and start-up extensions.

Messages go to $NOTIFY_SOCKET, set by systemd for Type=notify units and by the dev supervisor
for its children; without it every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from systemd import daemon  # type: ignore[attr-defined]

log = logging.getLogger("appliance.notify")


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` lines in one datagram; False when there is nobody to tell."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return bool(daemon.notify("\n".join(assignments)))
    except OSError as exc:  # the supervisor is gone; the service itself carries on
        log.warning("sd_notify failed: %s", exc)
        return False


def watchdog_period_s() -> float | None:
    """The watchdog timeout asked for by the manager, in seconds, or None when there is none."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
        pid = int(os.environ.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 1_000_000


async def ping_watchdog(period_s: float) -> None:
    """Send WATCHDOG=1 every half period, from the event loop itself.

    Because the ping is an ordinary task, a loop blocked by a stuck call stops pinging and the
    manager restarts the process: the ping proves the loop is alive, not just the process.
    """
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(period_s / 2)


@contextlib.asynccontextmanager
async def extending_start_timeout(step_s: float = 30.0) -> AsyncIterator[None]:
    """Keep asking the manager for more start-up time while a long load runs."""

    async def extend() -> None:
        while True:
            notify(f"EXTEND_TIMEOUT_USEC={int(step_s * 1_000_000)}")
            await asyncio.sleep(step_s / 3)

    task = asyncio.create_task(extend())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
