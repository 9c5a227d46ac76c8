"""The api service: the control plane on api.host:api.port, over the command table.

At start it sets up TLS (api/tls.py), loads the revocations and keeps following them, and, on
a box with no user yet, makes the one-time setup token and prints it to the journal and to
the console, the only way to create the first admin from the network.
"""

from __future__ import annotations

import sys

from aiohttp import web

from appliance.api.app import build_app
from appliance.api.tls import tls_for
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Api, ServiceState
from appliance.runtime.service import Service


class ApiService(Service[Api]):
    name = "api"

    runner: web.AppRunner | None = None
    dispatcher: Dispatcher | None = None

    async def start(self) -> None:
        api = self.config.api
        self.dispatcher = dispatcher = Dispatcher(default_table(), self.peers, self.config, self.log)
        try:
            await dispatcher.accounts.catch_up()
            setup_token = await dispatcher.accounts.prepare_first_boot()
        except IpcError as exc:
            self.log.warning("accounts not loaded yet (%s); following the store until it answers", exc)
            setup_token = None
        dispatcher.accounts.start_following()
        if setup_token is not None:
            self._announce_setup(setup_token)
        tls = tls_for(self.config)
        self.log.info("control plane: %s", tls.detail, extra={"TLS": "on" if tls.context else "off"})
        app = build_app(dispatcher, api, auth_required=self.config.security.auth_required,
                        tls=tls.context is not None, metrics=self.metrics)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, api.host, api.port, ssl_context=tls.context).start()
        scheme = "https" if tls.context else "http"
        self.set_state(ServiceState.READY, f"listening on {scheme}://{api.host}:{api.port} ({tls.detail})")

    def _announce_setup(self, token: str) -> None:
        scheme = "http" if self.config.api.loopback_only and self.config.api.tls.mode in ("auto", "off") else "https"
        message = (f"no user exists yet: create the first admin on the admin page, or POST /api/v1/auth/setup, "
                   f"with this one-time setup token: {token}")
        self.log.warning(message, extra={"SETUP_TOKEN": token})
        sys.stderr.write(f"\n*** appliance first boot: open {scheme}://<this box>:{self.config.api.port}/ and use "
                         f"the one-time setup token {token} ***\n\n")

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.accounts.stop()
        if self.runner is not None:
            await self.runner.cleanup()
