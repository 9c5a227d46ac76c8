"""The control plane's HTTP application (aiohttp): authentication, errors, the admin page.

Every route comes from the command table (rest.py) except the static admin page. Each request
gets a `Caller` here: from its bearer token, or anonymous; the dispatcher alone decides what a
caller may do (public health summary for anyone, everything else by role). Errors are always
JSON: ``{"error": {"code": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from appliance.api.rest import CALLER_KEY, MAX_BODY_KEY, Handler, add_command_routes, error_response
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.tokens import TokenAuthority

STATIC_DIR = Path(__file__).parent / "static"
HTTP_CODES = {404: "not_found", 405: "bad_request", 413: "too_large"}


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def build_app(dispatcher: Dispatcher, authority: TokenAuthority, *, auth_required: bool = True,
              max_body_bytes: int = 1 << 20) -> web.Application:
    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except CommandError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            code = HTTP_CODES.get(exc.status)
            if code is None:
                raise
            message = "no such route" if exc.status == 404 else exc.reason
            response = web.json_response({"error": {"code": code, "message": message}}, status=exc.status)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'")
        return response

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer(request)
        if token is not None:
            request[CALLER_KEY] = authority.caller(token, "rest", request.remote)
        elif auth_required:
            request[CALLER_KEY] = Caller.anonymous("rest", request.remote)
        else:  # security.auth_required: false (loopback only): everyone is the admin
            request[CALLER_KEY] = Caller("anonymous", Role.ADMIN, "rest", request.remote)
        return await handler(request)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_as_json, authenticate])
    app[MAX_BODY_KEY] = max_body_bytes
    add_command_routes(app, dispatcher)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    return app
