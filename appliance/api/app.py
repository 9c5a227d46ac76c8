"""The control plane's HTTP application (aiohttp): callers, errors, headers, CORS, the admin page.

Every /api/ route comes from the command table (rest.py); the spec and its human docs are
generated from the same table (openapi.py); /control is the same table over a WebSocket
(control_ws.py), and /v1/ the OpenAI-compatible API over llm.* commands (openai.py). Each
request gets a `Caller` here: from its bearer token, or anonymous (or, for /api/v1/metrics, a
scraper at an allowed address). The dispatcher alone decides what a caller may do. Errors are
always JSON: ``{"error": {"code": ..., "message": ..., "field": ...}}`` (under /v1/, OpenAI's
``{"error": {"message", "type", "param", "code"}}``).

Headers on every response: a strict Content-Security-Policy, no sniffing, no framing, no
referrer, no caching of API answers, and HSTS when served over TLS. CORS is off unless
api.allowed_origins names origins; then only those get CORS headers.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from aiohttp import web

from appliance.api.connections import ConnectionGuard
from appliance.api.control_ws import control_socket
from appliance.api.hub import Hub
from appliance.api.openai import add_openai_routes, openai_error
from appliance.api.openapi import add_spec_routes
from appliance.api.rest import CALLER_KEY, MAX_BODY_KEY, UPLOAD_DIR_KEY, Handler, add_command_routes, error_response
from appliance.config import ApiConfig
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.update import uploads_folder
from appliance.phrases import FOLDER as PHRASES_FOLDER
from appliance.runtime.metrics import Metrics

STATIC_DIR = Path(__file__).parent / "static"
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
METRICS_PATH = "/api/v1/metrics"
CONTROL_PATH = "/control"  # the WebSocket (control_ws.py)
OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible API (openai.py): errors in OpenAI's shape
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CORS_HEADERS = {"Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"}


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _in(address: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


def build_app(dispatcher: Dispatcher, api: ApiConfig, *, auth_required: bool = True, tls: bool = False,
              metrics: Metrics | None = None, hub: Hub | None = None,
              guard: ConnectionGuard | None = None) -> web.Application:
    accounts = dispatcher.accounts
    scrapers = [ipaddress.ip_network(n, strict=False) for n in api.metrics_allow]
    origins = set(api.allowed_origins)

    @web.middleware
    async def headers_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except CommandError as exc:
            response = openai_error(exc) if request.path.startswith(OPENAI_PREFIX) else error_response(exc)
        except web.HTTPException as exc:
            code = HTTP_CODES.get(exc.status)
            if code is None:
                raise
            message = "no such route" if exc.status == 404 else exc.reason
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = web.json_response({"error": {"code": code, "message": message}}, status=exc.status,
                                         headers=allow)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if (origin := request.headers.get("Origin")) in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        if metrics is not None:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "(none)"
            metrics.observe("appliance_http_request_seconds", "time to answer an HTTP request, by route",
                            time.perf_counter() - started, route=name, method=request.method)
            metrics.inc("appliance_http_responses_total", "HTTP responses by route and status class",
                        route=name, status=f"{response.status // 100}xx")
        return response

    @web.middleware
    async def caller(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and request.headers.get("Origin") in origins:
            return web.Response(status=204, headers=CORS_HEADERS)  # a CORS preflight from an allowed origin
        token = bearer(request)
        if token is not None:
            request[CALLER_KEY] = accounts.caller(token, "rest", request.remote)
        elif request.path == METRICS_PATH and _in(request.remote, scrapers):
            request[CALLER_KEY] = Caller("metrics-scraper", Role.VIEWER, "rest", request.remote)
        elif auth_required:
            request[CALLER_KEY] = Caller.anonymous("rest", request.remote)
        else:  # security.auth_required: false (loopback only): everyone is the admin
            request[CALLER_KEY] = Caller("anonymous", Role.ADMIN, "rest", request.remote)
        return await handler(request)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    hub = hub or Hub(dispatcher, dispatcher.log)

    async def control(request: web.Request) -> web.StreamResponse:
        header_caller = request[CALLER_KEY] if bearer(request) is not None else None
        if guard is None:
            return await control_socket(request, dispatcher, hub, api, auth_required, header_caller, None)
        # A token in the header is known before the upgrade: a refusal is a plain 503 or 429.
        with guard.socket(request.remote or "", header_caller.subject if header_caller else None) as place:
            return await control_socket(request, dispatcher, hub, api, auth_required, header_caller, place)

    # Routes that stream their body to a file (body_file) set no bound on what is read into memory.
    largest = max([api.max_body_bytes] + [r.max_body_bytes or 0 for c in dispatcher.table for r in c.http
                                          if r.body_file is None])
    guarded = [guard.middleware] if guard else []  # outermost: a request's whole life marks its connection busy
    app = web.Application(client_max_size=largest, middlewares=[*guarded, headers_and_errors, caller])
    app[MAX_BODY_KEY] = api.max_body_bytes
    app[UPLOAD_DIR_KEY] = uploads_folder(dispatcher.config.paths.state_dir)
    add_command_routes(app, dispatcher)
    add_spec_routes(app, dispatcher.table)
    add_openai_routes(app, dispatcher)
    app.router.add_get("/", index)
    app.router.add_get(CONTROL_PATH, control)
    # The box's own words by code (appliance/phrases), for the page to render in its language.
    app.router.add_static("/static/phrases/", PHRASES_FOLDER)
    app.router.add_static("/static/", STATIC_DIR)
    return app
