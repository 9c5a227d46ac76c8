"""`appliance run`: the five services as child processes, supervised like systemd would.

Children start in dependency order, each only after the previous one reported READY=1. A
child that exits, misses its watchdog or never gets ready is restarted with exponential
backoff. SIGTERM or Ctrl-C stops them all in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from appliance.config import ApplianceConfig
from appliance.protocol.services import SERVICE_NAMES
from appliance.supervisor.child import Child

log = logging.getLogger("appliance.supervisor")

STABLE_AFTER_S = 30.0  # a child that ran this long has its backoff reset
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 10.0


def admin_url(config: ApplianceConfig) -> str:
    api = config.api
    scheme = "http" if api.tls_mode == "off" else "https"
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
    return f"{scheme}://{host}:{api.port}/"


class Supervisor:
    def __init__(self, config_path: Path, config: ApplianceConfig, *, watchdog_s: float = 10.0,
                 ready_timeout_s: float = 120.0) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        notify_dir = config.paths.runtime_dir / "supervisor"
        self.children = [Child(name, config_path.resolve(), notify_dir, watchdog_s) for name in SERVICE_NAMES]
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        began = time.monotonic()
        # Started first so that a child that never gets ready is killed and retried.
        watchdog = asyncio.create_task(self._watchdog())
        keepers = []
        for child in self.children:
            if self.stopping.is_set():
                break
            await child.open_notify_socket()
            await child.spawn(self.ready_timeout_s)
            keepers.append(asyncio.create_task(self._keep_alive(child)))
            await self._until_ready_or_stop(child)
        if not self.stopping.is_set():
            elapsed = time.monotonic() - began
            log.info("all services ready in %.2f s", elapsed, extra={"READY_SECONDS": f"{elapsed:.2f}"})
            cli = os.environ.get("APPLIANCE_CLI", "appliance")
            sys.stdout.write(f"appliance: all {len(self.children)} services ready in {elapsed:.2f} s; "
                             f"admin page: {admin_url(self.config)}\n"
                             f"appliance: ask it something: {cli} chat 'What can you do?'\n")
            sys.stdout.flush()
        await self.stopping.wait()
        watchdog.cancel()
        for task in keepers:
            task.cancel()
        await self._stop_all()
        return 0

    async def _until_ready_or_stop(self, child: Child) -> None:
        ready = asyncio.create_task(child.ready.wait())
        stop = asyncio.create_task(self.stopping.wait())
        # The keeper restarts a child that dies or stalls here; this loop only waits.
        await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stop.cancel()

    async def _keep_alive(self, child: Child) -> None:
        failures = 0
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            failures = 1 if ran > STABLE_AFTER_S else failures + 1
            delay = min(2 ** (failures - 1), MAX_BACKOFF_S)
            log.warning("%s exited with status %s after %.1f s; restarting in %.0f s",
                        child.name, code, ran, delay, extra={"CHILD": child.name, "EXIT_STATUS": code})
            await asyncio.sleep(delay)
            if self.stopping.is_set():
                return
            child.restarts += 1
            await child.spawn(self.ready_timeout_s)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for child in self.children:
                if reason := child.overdue(now):
                    log.error("%s: %s; killing it", child.name, reason, extra={"CHILD": child.name})
                    child.kill()

    async def _stop_all(self) -> None:
        for child in reversed(self.children):
            code = await child.terminate(STOP_GRACE_S)
            log.info("stopped %s (status %s)", child.name, code)
            child.close()


def run_supervisor(config_path: Path, config: ApplianceConfig) -> int:
    return asyncio.run(Supervisor(config_path, config).run())
