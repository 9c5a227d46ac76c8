"""The base of every service process and the lifecycle that runs it.

1. The IPC socket opens first, so ``health`` answers ``starting`` while the service loads.
2. `Service.start` acquires resources; only when it returns is READY=1 sent.
3. A watchdog task pings from the event loop for as long as the loop is alive.
4. SIGTERM or SIGINT stops the service within a few seconds: `Service.stop`, then the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar, cast

from appliance import __version__
from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.peers import Peers
from appliance.ipc.server import IpcServer
from appliance.ipc.sockets import bind_unix_socket, inherited_socket
from appliance.phrases import Phrase
from appliance.protocol.common import (
    HEALTH,
    SAMPLES,
    Empty,
    MetricFamilies,
    MetricFamily,
    S,
    ServiceHealth,
    ServiceName,
    ServiceState,
)
from appliance.runtime.metrics import Metrics
from appliance.runtime.notify import notify, ping_watchdog, watchdog_period_s

STOP_BUDGET_S = 4.0  # of the 5 s a stop may take, what the service's own cleanup may use
P = TypeVar("P", bound=ServiceName)


class Service(ABC, Generic[S]):
    """A process serving the endpoints of service ``S`` (``class StoreService(Service[Store])``)."""

    name: ClassVar[ServiceName]

    def __init__(self, config: ApplianceConfig) -> None:
        self.config = config
        self.log = logging.getLogger(f"appliance.{self.name}")
        self.metrics = Metrics()
        self.ipc: IpcServer[S] = IpcServer(cast(S, self.name), config.ipc.max_frame_bytes, self.log,
                                           observe=self.metrics.observe_ipc)
        self._state = ServiceState.STARTING
        self._detail: tuple[str | Phrase, ...] = (Phrase("service.starting"),)
        self._started_at = time.monotonic()
        self.peers = Peers(config)

    # --- for subclasses ---------------------------------------------------------------------

    def register(self, ipc: IpcServer[S]) -> None:
        """Add this service's IPC endpoints (before the socket opens)."""

    async def collect_metrics(self) -> list[MetricFamily]:
        """This service's own metrics besides self.metrics (read when the api gathers them)."""
        return []

    @abstractmethod
    async def start(self) -> None:
        """Acquire resources; return when the service is really ready (or degraded)."""

    async def stop(self) -> None:
        """Release resources; must finish within STOP_BUDGET_S."""

    def peer(self, name: P) -> IpcClient[P]:
        """A client for another service, created once and closed on stop."""
        return self.peers.client(name)

    def set_state(self, state: ServiceState, *detail: str | Phrase) -> None:
        """The state and what a person should know about it, in parts (Phrases: the box's own words)."""
        if (state, detail) == (self._state, self._detail):
            return
        text = "; ".join(str(part) for part in detail)
        level = logging.WARNING if state is ServiceState.DEGRADED else logging.INFO
        self.log.log(level, "state %s%s", state.value, f": {text}" if text else "",
                     extra={"SERVICE_STATE": state.value})
        self._state, self._detail = state, detail
        notify(f"STATUS={state.value}{': ' + text if text else ''}")

    @property
    def state(self) -> ServiceState:
        return self._state

    def health(self) -> ServiceHealth:
        return ServiceHealth(name=self.name, state=self._state, version=__version__,
                             uptime_s=round(time.monotonic() - self._started_at, 3),
                             pid=os.getpid(), detail_phrases=[]).extended(*self._detail)

    # --- lifecycle --------------------------------------------------------------------------

    async def _open_socket(self) -> None:
        async def health(_: Empty) -> ServiceHealth:
            return self.health()

        async def samples(_: Empty) -> MetricFamilies:
            return MetricFamilies(families=self.metrics.families() + await self.collect_metrics())

        self.ipc.add(HEALTH, health)
        self.ipc.add(SAMPLES, samples)
        self.register(self.ipc)
        inherited = inherited_socket()
        sock = inherited or bind_unix_socket(self.config.socket_path(self.name))
        await self.ipc.start(sock, owned=inherited is None)

    async def _shutdown(self) -> None:
        notify("STOPPING=1")
        self.set_state(ServiceState.STOPPING, Phrase("service.stopping"))
        try:
            await asyncio.wait_for(self.stop(), STOP_BUDGET_S)
        except TimeoutError:
            self.log.error("stop did not finish within %.0f s; exiting anyway", STOP_BUDGET_S)
        except Exception:
            self.log.exception("stop failed")
        await self.ipc.stop()
        await self.peers.close()


async def run_service(service: Service[Any]) -> int:
    """Run ``service`` until SIGTERM/SIGINT; the process exit code."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    try:
        await service._open_socket()
    except (OSError, RuntimeError) as exc:
        service.log.error("cannot open IPC socket: %s", exc)
        notify(f"STATUS=failed: cannot open IPC socket: {exc}")
        return 1

    watchdog = None
    if (period := watchdog_period_s()) is not None:
        watchdog = asyncio.create_task(ping_watchdog(period))

    starting = asyncio.create_task(service.start())
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if not starting.done():
        service.log.info("stop requested while starting")
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    elif (error := starting.exception()) is not None:
        service.log.error("start failed: %s", error, exc_info=error)
        notify(f"STATUS=failed: {error}")
        exit_code = 1
    else:
        if service.state is ServiceState.STARTING:
            service.set_state(ServiceState.READY, *service._detail)
        notify("READY=1")
        service.log.info("ready after %.2f s", time.monotonic() - service._started_at)
        await stop_wait

    stop_wait.cancel()
    await service._shutdown()
    if watchdog is not None:
        watchdog.cancel()
    return exit_code
