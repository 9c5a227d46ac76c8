"""The api service: serves the control plane on api.host:api.port and reports everyone's health."""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from appliance.api.app import build_app
from appliance.api.auth import TokenAuthority
from appliance.api.memory import MemoryRoutes
from appliance.api.metrics import MetricsRoutes
from appliance.ipc.errors import IpcError
from appliance.protocol.common import HEALTH, Api, ServiceHealth, ServiceName, ServiceState
from appliance.protocol.services import SERVICE_NAMES
from appliance.runtime.service import Service

PEER_HEALTH_TIMEOUT_S = 2.0


class ApiService(Service[Api]):
    name = "api"

    runner: web.AppRunner | None = None

    async def start(self) -> None:
        api = self.config.api
        authority = TokenAuthority.from_config(self.config)
        memory = MemoryRoutes(self.peer("store"), self.peer("engine"), self.log,
                              auth_required=self.config.security.auth_required)
        metrics = MetricsRoutes(self.peer("engine"))

        def routes(app: web.Application) -> None:
            memory.add_to(app)
            metrics.add_to(app)

        app = build_app(authority, self.collect_health, auth_required=self.config.security.auth_required,
                        max_body_bytes=api.max_body_bytes, extra_routes=routes)
        context = None
        if api.tls.cert_file is not None and api.tls.key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(api.tls.cert_file, api.tls.key_file)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, api.host, api.port, ssl_context=context).start()
        scheme = "https" if context else "http"
        self.set_state(ServiceState.READY, f"listening on {scheme}://{api.host}:{api.port}")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _peer_health(self, name: ServiceName) -> ServiceHealth:
        if name == self.name:
            return self.health()
        try:
            return await self.peer(name).call(HEALTH, timeout_s=PEER_HEALTH_TIMEOUT_S)
        except IpcError as exc:
            return ServiceHealth(name=name, state=ServiceState.DOWN, version="", uptime_s=0.0,
                                 detail=str(exc))

    async def collect_health(self) -> list[ServiceHealth]:
        return list(await asyncio.gather(*(self._peer_health(n) for n in SERVICE_NAMES)))
