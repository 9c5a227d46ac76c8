"""Every REST route with every role and with no token: refused exactly when the table says so.

Allowed calls may still fail for other reasons (a missing field, a service that is not
running); what must never happen is a 401/403 for an allowed role or anything else for a
refused one. The routes come from the running app, so a route added without a command (and so
without a declared permission) fails here too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest

from appliance.config import ApplianceConfig
from appliance.control.caller import Permission, Role, role_allows
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from tests.helpers import api_client, bearer

pytestmark = pytest.mark.slow
ROLES: list[Role | None] = [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN]
# The admin page, its static files and the spec: public, and no command behind them; /control is the
# WebSocket and /v1/ the OpenAI-compatible API: both run commands through the dispatcher with the
# caller's role (tests/api/test_control_ws.py, tests/api/test_openai.py).
NOT_COMMANDS = {(method, path) for method in ("GET", "HEAD")
                for path in ("/", "/static", "/api/v1/openapi.json", "/api/docs", "/control", "/v1/models")} | {
    ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")}
PARAMS = {"id": "1", "username": "nobody", "jti": "0" * 32, "device_id": "door-1", "name": "nightly"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::[^}]+)?\}", lambda m: PARAMS[m.group(1)], path)


async def test_route_role_matrix(config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    routes = {(route.method, route.path): command for command in default_table() for route in command.http
              if "rest" in command.surfaces}
    async with api_client(config, peers) as (client, dispatcher):
        served = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.resource}
        assert served - NOT_COMMANDS == {(m, re.sub(r":[^}]+", "", p)) for m, p in routes}, "a route without a command"
        matrix = []
        for (method, path), command in sorted(routes.items()):
            for role in ROLES:
                # A fresh token each time: auth.logout ends the token it is called with.
                headers = bearer(dispatcher, role, subject="matrix") if role else {}
                reply = await client.request(method, concrete(path), headers=headers,
                                             json={} if method in ("POST", "PUT", "PATCH") else None)
                allowed = role_allows(role, command.permission)
                refused_as = 401 if role is None else 403
                ok = reply.status not in (401, 403) if allowed else reply.status == refused_as
                # A public route may still say 401 about a token in its body (health report, login...).
                if command.permission is Permission.PUBLIC and reply.status == 401:
                    ok = (await reply.json())["error"]["code"] == "unauthorized"
                matrix.append((method, path, role.value if role else "none", reply.status, ok))
        wrong = [row for row in matrix if not row[-1]]
        assert not wrong, "\n".join(f"{m} {p} as {r}: {s}" for m, p, r, s, _ in wrong)
        assert len(matrix) == 4 * len(routes) >= 4 * 30
