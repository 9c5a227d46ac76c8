"""The server half of IPC: typed endpoints served as HTTP over a Unix socket (aiohttp).

Requests are ``POST /v1/<method>`` with a JSON body (``GET`` works for endpoints whose request
has no required fields, so ``curl --unix-socket`` can inspect any service). Plain responses
are one JSON object; streaming responses are newline-delimited JSON. Failures are a JSON body
``{"error": {"code": ..., "message": ...}}`` with a matching status, and a log line; a bad
frame never takes the service down.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic

from aiohttp import web
from pydantic import ValidationError

from appliance.ipc.deadline import DEADLINE_HEADER, DeadlinePassed, caller_waits_until, parse_header
from appliance.ipc.errors import BadRequest, Busy, IpcError, NotFound, TooLarge
from appliance.protocol.common import Endpoint, Message, Req, Resp, S
from appliance.validation import describe_validation_error

Handler = Callable[[Req], Awaitable[Resp]]
StreamHandler = Callable[[Req], AsyncGenerator[Resp, None]]
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Observe = Callable[[str, float, int], None]  # method, seconds, HTTP status


def error_body(error: IpcError) -> bytes:
    body: dict[str, object] = {"code": error.code, "message": str(error)}
    if isinstance(error, Busy):
        body["retry_after_s"] = error.retry_after_s
    if error.phrase is not None:
        body["phrase"] = error.phrase.model_dump()
    return json.dumps({"error": body}).encode()


def error_response(error: IpcError) -> web.Response:
    headers = {"Retry-After": str(math.ceil(error.retry_after_s))} if isinstance(error, Busy) else None
    return web.Response(status=error.status, body=error_body(error), content_type="application/json",
                        headers=headers)


class IpcServer(Generic[S]):
    """The endpoints of service ``S``: only its own (and every-service ones like HEALTH) can be added."""

    def __init__(self, service: S, max_frame_bytes: int, log: logging.Logger,
                 observe: Observe | None = None) -> None:
        self.service = service
        self._log = log
        self._max_frame_bytes = max_frame_bytes
        self._observe = observe
        self._app = web.Application(client_max_size=max_frame_bytes,
                                    middlewares=[self._timed, self._errors_as_json])
        self._runner: web.AppRunner | None = None
        self._socket_file: Path | None = None

    def add(self, endpoint: Endpoint[S, Req, Resp], handler: Handler[Req, Resp]) -> None:
        assert not endpoint.streaming, endpoint

        async def serve(request: web.Request) -> web.StreamResponse:
            with caller_waits_until(parse_header(request.headers.get(DEADLINE_HEADER))):
                reply = await handler(await self._parse(request, endpoint))
            return web.Response(body=reply.model_dump_json(), content_type="application/json")

        self._route(endpoint, serve)

    def add_stream(self, endpoint: Endpoint[S, Req, Resp], handler: StreamHandler[Req, Resp]) -> None:
        assert endpoint.streaming, endpoint

        async def serve(request: web.Request) -> web.StreamResponse:
            items = handler(await self._parse(request, endpoint))
            try:
                # The first item is awaited before any header goes out, so a request that fails
                # at once (no model, bad prompt) still gets a proper error status.
                first = await anext(items, None)
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                await response.prepare(request)
                await self._pump(response, first, items)
                return response
            finally:
                await items.aclose()  # a client that went away stops the producer here

        self._route(endpoint, serve)

    async def _pump(self, response: web.StreamResponse, first: Message | None, items: AsyncIterator[Message]) -> None:
        try:
            if first is not None:
                await response.write(first.model_dump_json().encode() + b"\n")
                async for item in items:
                    await response.write(item.model_dump_json().encode() + b"\n")
        except (ConnectionResetError, ConnectionError):
            self._log.info("stream client disconnected", extra={"SERVICE": self.service})
            return
        except IpcError as exc:
            await response.write(error_body(exc) + b"\n")
        except Exception:
            self._log.exception("stream handler failed")
            await response.write(error_body(IpcError("internal error; see the service log")) + b"\n")
        await response.write_eof()

    def _route(self, endpoint: Endpoint[Any, Any, Any], serve: AiohttpHandler) -> None:
        self._app.router.add_post(endpoint.path, serve)
        if not any(f.is_required() for f in endpoint.request.model_fields.values()):
            self._app.router.add_get(endpoint.path, serve)

    async def _parse(self, request: web.Request, endpoint: Endpoint[Any, Req, Any]) -> Req:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge(f"{endpoint.method}: request exceeds the "
                           f"{self._max_frame_bytes}-byte frame limit") from None
        try:
            return endpoint.request.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise BadRequest(f"{endpoint.method}: {describe_validation_error(exc)}") from None

    @web.middleware
    async def _timed(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        """Each request's duration and status, by method, to whoever keeps the metrics."""
        started = time.perf_counter()
        response = await handler(request)
        if self._observe is not None:
            self._observe(request.path.removeprefix("/v1/"), time.perf_counter() - started, response.status)
        return response

    @web.middleware
    async def _errors_as_json(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        try:
            return await handler(request)
        except IpcError as exc:
            # Work skipped because its caller had gone is counted by the service, not logged one by one:
            # the caller logged its own timeout, and a backlog would otherwise flood the journal.
            level = logging.DEBUG if isinstance(exc, DeadlinePassed) else \
                logging.ERROR if exc.status >= 500 else logging.WARNING
            self._log.log(level, "ipc %s %s: %s", request.method, request.path, exc,
                          extra={"IPC_PATH": request.path, "IPC_ERROR": exc.code})
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 404:
                return error_response(NotFound(f"no IPC method at {request.path} on {self.service}"))
            if exc.status == 405:
                return error_response(BadRequest(f"{request.method} not allowed on {request.path}"))
            raise
        except Exception:
            self._log.exception("ipc handler for %s failed", request.path)
            return error_response(IpcError("internal error; see the service log"))

    async def start(self, sock: socket.socket, *, owned: bool = True) -> None:
        """Serve on ``sock``; ``owned`` sockets have their file removed on stop (systemd's not)."""
        # Remember the path now: once aiohttp closes the socket, getsockname() no longer works.
        self._socket_file = Path(sock.getsockname()) if owned and sock.getsockname() else None
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket_file is not None:
            self._socket_file.unlink(missing_ok=True)
            self._socket_file = None
