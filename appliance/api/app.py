"""The control plane's HTTP application (aiohttp).

Every /api/ route needs a valid token except `GET /api/v1/health`, which tells anyone the
overall state and each service's state, no more. `POST /api/v1/health` takes
``{"token": "..."}`` as in the reference design and answers with the full report. Errors
are always JSON: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance import __version__
from appliance.api.auth import MAX_TOKEN_CHARS, Claims, TokenAuthority, TokenError
from appliance.protocol.common import ServiceHealth, ServiceState
from appliance.validation import describe_validation_error

HealthSource = Callable[[], Awaitable[list[ServiceHealth]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_DIR = Path(__file__).parent / "static"
CLAIMS_KEY = web.RequestKey("claims", Claims)
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/health")}  # POST checks its body's token


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": {"code": code, "message": message}}),
                         content_type="application/json", headers=headers)


class HealthQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)


def overall(services: list[ServiceHealth]) -> str:
    return "ready" if all(s.state is ServiceState.READY for s in services) else "degraded"


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def build_app(authority: TokenAuthority, health: HealthSource, *, auth_required: bool = True,
              max_body_bytes: int = 1 << 20,
              extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
    def authenticate(token: str) -> Claims:
        try:
            return authority.verify(token)
        except TokenError as exc:
            raise ApiError(401, "unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"}) from None

    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError:
            raise
        except web.HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "error")
            raise ApiError(exc.status, code, exc.reason) from None
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'")
        return response

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and (request.method, request.path) not in PUBLIC:
            token = bearer(request)
            if token is None and auth_required:
                raise ApiError(401, "unauthorized", "this route needs 'Authorization: Bearer <token>'",
                               **{"WWW-Authenticate": "Bearer"})
            if token is not None:
                request[CLAIMS_KEY] = authenticate(token)
        return await handler(request)

    async def get_health(request: web.Request) -> web.Response:
        services = await health()
        token = bearer(request)
        if token is not None:
            authenticate(token)
            return full_report(services)
        return web.json_response({"status": overall(services),
                                  "services": {s.name: s.state.value for s in services}})

    async def post_health(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "too_large", f"body exceeds {max_body_bytes} bytes") from None
        try:
            query = HealthQuery.model_validate_json(body)
        except ValidationError as exc:
            raise ApiError(400, "bad_request", f"body: {describe_validation_error(exc)}") from None
        authenticate(query.token)
        return full_report(await health())

    def full_report(services: list[ServiceHealth]) -> web.Response:
        data: dict[str, Any] = {"status": overall(services), "version": __version__,
                                "services": [s.model_dump(mode="json") for s in services]}
        return web.json_response(data)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_as_json, require_token])
    app.router.add_get("/api/v1/health", get_health)
    app.router.add_post("/api/v1/health", post_health)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    if extra_routes is not None:
        extra_routes(app)
    return app
