"""The api service: the control plane on api.host:api.port, over the command table.

At start it sets up TLS (api/tls.py), loads the revocations and keeps following them, and, on
a box with no user yet, makes the one-time setup token and prints it to the journal and to
the console, the only way to create the first admin from the network.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from appliance.api.app import build_app
from appliance.api.connections import ConnectionGuard, GuardedSite, descriptors_for
from appliance.api.hub import Hub
from appliance.api.tls import tls_for
from appliance.config import ApplianceConfig
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.server import IpcServer
from appliance.phrases import Phrase
from appliance.protocol.common import Api, Changed, ServiceHealth, ServiceState
from appliance.protocol.messages import API_BROADCAST, Broadcast
from appliance.protocol.site import API_ENTITIES_CHANGED, StatesStored
from appliance.runtime.service import Service

FIRST_BOOT_RETRY_S = 1.0


class ApiService(Service[Api]):
    name = "api"

    runner: web.AppRunner | None = None
    _first_boot: asyncio.Task[None] | None = None

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self.dispatcher = Dispatcher(default_table(), self.peers, config, self.log)
        self.hub = Hub(self.dispatcher, self.log)  # /control's subscriptions, and what messages.broadcast sends
        websocket = config.api.websocket
        self.guard = ConnectionGuard(config.api.max_connections, config.api.request_head_timeout_s,
                                     websocket.max_clients, websocket.max_clients_per_user,
                                     websocket.max_unauthenticated_per_address)

    def register(self, ipc: IpcServer[Api]) -> None:
        async def broadcast(message: Broadcast) -> Changed:
            return Changed(changed=self.hub.broadcast(message))

        async def entities_changed(changed: StatesStored) -> Changed:
            return Changed(changed=self.hub.feeds["entities"].push({"items": changed.model_dump(mode="json")[
                "changed"]}))

        ipc.add(API_BROADCAST, broadcast)
        ipc.add(API_ENTITIES_CHANGED, entities_changed)

    async def start(self) -> None:
        api = self.config.api
        dispatcher = self.dispatcher
        self._first_boot = asyncio.create_task(self._check_first_boot(), name="first-boot")
        dispatcher.accounts.start_following()
        tls = tls_for(self.config)
        self.log.info("control plane: %s", tls.detail, extra={"TLS": "on" if tls.context else "off"})
        self.guard.cap = descriptors_for(api.max_connections)
        if self.guard.cap < api.max_connections:
            self.log.warning("api.max_connections %d does not fit the file descriptor limit: at most %d",
                             api.max_connections, self.guard.cap)
        app = build_app(dispatcher, api, auth_required=self.config.security.auth_required,
                        tls=tls.context is not None, metrics=self.metrics, hub=self.hub, guard=self.guard)
        # A search of 4096 characters percent-encoded is ~48 KiB of request line; a token header ~8 KiB.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, max_line_size=64 << 10,
                                    max_field_size=16 << 10)
        await self.runner.setup()
        await GuardedSite(self.runner, api.host, api.port, ssl_context=tls.context, guard=self.guard).start()
        self.guard.start()
        scheme = "https" if tls.context else "http"
        url = f"{scheme}://{api.host}:{api.port}"
        self.set_state(ServiceState.READY, Phrase("api.listening", url=url, tls=tls.detail))

    async def _check_first_boot(self) -> None:
        """Once the store answers: with no user yet, make and print the one-time setup token."""
        while True:
            try:
                setup_token = await self.dispatcher.accounts.prepare_first_boot()
                break
            except IpcError as exc:
                self.log.info("users not known yet (%s); asking the store again", exc)
                await asyncio.sleep(FIRST_BOOT_RETRY_S)
        if setup_token is not None:
            self._announce_setup(setup_token)

    def _announce_setup(self, token: str) -> None:
        scheme = "http" if self.config.api.tls_mode == "off" else "https"
        message = (f"no user exists yet: create the first admin on the admin page, or POST /api/v1/auth/setup, "
                   f"with this one-time setup token: {token}")
        self.log.warning(message, extra={"SETUP_TOKEN": token})
        sys.stderr.write(f"\n*** appliance first boot: open {scheme}://<this box>:{self.config.api.port}/ and use "
                         f"the one-time setup token {token} ***\n\n")

    def health(self) -> ServiceHealth:
        """The state as set, plus the connection counts (read on each call, never logged)."""
        health = super().health()
        return health.extended(self.guard.summary())

    async def stop(self) -> None:
        await self.guard.stop()
        if self._first_boot is not None:
            self._first_boot.cancel()
        await self.dispatcher.accounts.stop()
        if self.runner is not None:
            await self.runner.cleanup()
