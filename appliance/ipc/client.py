"""The client half of IPC: typed calls to one service over its Unix socket.

Every call has a deadline. A peer that is not running, not listening or drops the connection
raises `ServiceDown` at once; one that does not answer in time raises `IpcTimeout`. Neither
ever hangs the caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Generic

import aiohttp
from pydantic import ValidationError

from appliance.ipc.deadline import DEADLINE_HEADER
from appliance.ipc.errors import IpcError, IpcTimeout, ServiceDown, error_from_wire
from appliance.phrases import PhraseWire
from appliance.protocol.common import Empty, Endpoint, Req, Resp, S


class IpcClient(Generic[S]):
    """Calls to service ``S``: only its endpoints type-check."""

    def __init__(self, service: S, socket_path: Path, timeout_s: float = 10.0) -> None:
        self.service = service
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.UnixConnector(path=str(self.socket_path))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _url(self, endpoint: Endpoint[Any, Any, Any]) -> str:
        return f"http://{self.service}{endpoint.path}"

    def _where(self, endpoint: Endpoint[Any, Any, Any]) -> str:
        return f"{self.service}.{endpoint.method}"

    async def call(self, endpoint: Endpoint[S, Req, Resp], request: Req | None = None,
                   *, timeout_s: float | None = None) -> Resp:
        assert not endpoint.streaming, endpoint
        deadline = timeout_s or self.timeout_s
        body = (request or Empty()).model_dump_json()
        try:
            async with asyncio.timeout(deadline):
                # The deadline travels with the call, so the service skips work it would finish too late.
                async with self._client().post(self._url(endpoint), data=body, headers={
                        "Content-Type": "application/json", DEADLINE_HEADER: f"{deadline:g}"}) as response:
                    payload = await response.read()
                    if response.status != 200:
                        raise self._remote_error(endpoint, response.status, payload)
        except TimeoutError:
            raise IpcTimeout(f"{self._where(endpoint)} did not answer within {deadline:g} s") from None
        except aiohttp.ClientError as exc:
            raise self._down(exc) from None
        return self._decode(endpoint, payload)

    async def stream(self, endpoint: Endpoint[S, Req, Resp], request: Req,
                     *, timeout_s: float | None = None) -> AsyncGenerator[Resp, None]:
        """Items as the service produces them; ``timeout_s`` bounds the wait for each one.

        Leaving the loop early closes the connection, which the service takes as a cancel.
        """
        assert endpoint.streaming, endpoint
        deadline = timeout_s or self.timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=deadline, sock_read=deadline)
        try:
            async with self._client().post(self._url(endpoint), data=request.model_dump_json(),
                                           headers={"Content-Type": "application/json"},
                                           timeout=timeout) as response:
                if response.status != 200:
                    raise self._remote_error(endpoint, response.status, await response.read())
                async for line in response.content:
                    if line.strip():
                        yield self._decode(endpoint, line)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise IpcTimeout(f"{self._where(endpoint)} sent nothing for {deadline:g} s") from None
        except aiohttp.ClientError as exc:
            raise self._down(exc) from None

    def _down(self, exc: aiohttp.ClientError) -> ServiceDown:
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            return ServiceDown(f"{self.service} is down: cannot connect to {self.socket_path}: {reason}")
        return ServiceDown(f"{self.service} dropped the connection: {exc.__class__.__name__}")

    def _remote_error(self, endpoint: Endpoint[Any, Any, Any], status: int, payload: bytes) -> IpcError:
        try:
            error = json.loads(payload)["error"]
            retry = error.get("retry_after_s")
            return error_from_wire(str(error["code"]), f"{self._where(endpoint)}: {error['message']}",
                                   float(retry) if isinstance(retry, (int, float)) else None,
                                   PhraseWire.lenient(error.get("phrase")))
        except (ValueError, KeyError, TypeError):
            return IpcError(f"{self._where(endpoint)}: HTTP {status} without an error body")

    def _decode(self, endpoint: Endpoint[Any, Any, Resp], payload: bytes) -> Resp:
        try:
            data = json.loads(payload)
        except ValueError:
            raise IpcError(f"{self._where(endpoint)}: reply is not JSON") from None
        if isinstance(data, dict) and set(data) == {"error"}:
            raise self._remote_error(endpoint, 200, payload)
        try:
            return endpoint.response.model_validate(data)
        except ValidationError as exc:
            raise IpcError(f"{self._where(endpoint)}: malformed reply: {exc.errors()[0]['msg']}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
