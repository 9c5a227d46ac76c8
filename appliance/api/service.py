"""The api service: serves the control plane on api.host:api.port over the command table."""

from __future__ import annotations

import ssl

from aiohttp import web

from appliance.api.app import build_app
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.control.tokens import TokenAuthority
from appliance.protocol.common import Api, ServiceState
from appliance.runtime.service import Service


class ApiService(Service[Api]):
    name = "api"

    runner: web.AppRunner | None = None

    async def start(self) -> None:
        api = self.config.api
        authority = TokenAuthority.from_config(self.config)

        async def authenticate(token: str) -> Caller:
            return authority.caller(token, "rest")

        dispatcher = Dispatcher(default_table(), self.peers, self.config, self.log, authenticate=authenticate)
        app = build_app(dispatcher, authority, auth_required=self.config.security.auth_required,
                        max_body_bytes=api.max_body_bytes)
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
