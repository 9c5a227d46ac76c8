"""IPC clients for the services a process talks to: created on first use, closed together."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.protocol.common import Agent, Api, Engine, Mqtt, ServiceName, Store

P = TypeVar("P", bound=ServiceName)


class Peers:
    def __init__(self, config: ApplianceConfig, timeout_s: float | None = None) -> None:
        self._config = config
        self._timeout_s = timeout_s or config.ipc.timeout_s
        self._clients: dict[ServiceName, IpcClient[Any]] = {}

    def client(self, name: P) -> IpcClient[P]:
        if name not in self._clients:
            self._clients[name] = IpcClient(name, self._config.socket_path(name), self._timeout_s)
        return cast(IpcClient[P], self._clients[name])

    @property
    def store(self) -> IpcClient[Store]:
        return self.client("store")

    @property
    def engine(self) -> IpcClient[Engine]:
        return self.client("engine")

    @property
    def mqtt(self) -> IpcClient[Mqtt]:
        return self.client("mqtt")

    @property
    def agent(self) -> IpcClient[Agent]:
        return self.client("agent")

    @property
    def api(self) -> IpcClient[Api]:
        return self.client("api")

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
