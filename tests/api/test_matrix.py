"""Every REST route with every role and with no token: refused exactly when the table says so; and
every command with an owner rule, on its owner's row and on someone else's, over REST, /control
and the console: refused exactly when the rule says so.

Allowed calls may still fail for other reasons (a missing field, a service that is not
running); what must never happen is a 401/403 for an allowed role or anything else for a
refused one. The routes come from the running app, so a route added without a command (and so
without a declared permission) fails here too.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ApplianceConfig, load_config
from appliance.control.caller import Caller, Permission, Role, role_allows
from appliance.control.command import OwnRow
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from tests.helpers import api_client, bearer, cli

pytestmark = pytest.mark.slow
ROLES: list[Role | None] = [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN]
# The admin page, its static files (the box's phrases among them) and the spec: public, and no command
# behind them; /control is the
# WebSocket and /v1/ the OpenAI-compatible API: both run commands through the dispatcher with the
# caller's role (tests/api/test_control_ws.py, tests/api/test_openai.py).
NOT_COMMANDS = {(method, path) for method in ("GET", "HEAD")
                for path in ("/", "/static", "/static/phrases", "/api/v1/openapi.json", "/api/docs", "/control",
                             "/v1/models")} | {
    ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")}
PARAMS = {"id": "1", "username": "nobody", "jti": "0" * 32, "device_id": "door-1", "name": "nightly",
          "entity_id": "switch.nothing"}


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


OWNER, OTHER = "olga", "mallory"


async def _row(dispatcher: Dispatcher, name: str, n: int) -> dict[str, Any]:
    """A fresh row of the kind ``name`` acts on, owned by OWNER; the request that names it."""
    olga = Caller(OWNER, Role.OPERATOR, "rest")
    if name.startswith("tasks."):
        task = await dispatcher.call("tasks.create", {"kind": "ask", "query": f"q{n}"}, olga)
        return {"id": task.id}  # type: ignore[attr-defined]
    if name.startswith("schedules."):
        body = {"name": f"s{n}", "trigger": "interval:1h", "action": "heartbeat"}
        await dispatcher.call("schedules.create", body, olga)
        return body
    if name == "memory.ingest":
        await dispatcher.call("memory.ingest", {"path": f"manuals/pump-{n}.md", "text": "prime the pump"}, olga)
        return {"path": f"manuals/pump-{n}.md", "text": "prime it twice"}
    assert name == "chat"
    with contextlib.suppress(CommandError):  # the engine is not running: the conversation is claimed first
        async for _ in dispatcher.stream("chat", {"message": "hi", "conversation": f"c{n}"}, olga):
            pass
    return {"message": "what did I ask?", "conversation": f"c{n}"}


async def test_owner_matrix(config_file: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """Every command with an owner rule, on a row of its owner's and on someone else's, with every
    role, over REST and /control: refused (403) exactly when the rule says so; the console (an
    admin) may act on anyone's."""
    peers = await services("store")
    owned = sorted((c for c in default_table() if isinstance(c.owner, OwnRow) and c.http), key=lambda c: c.name)
    assert {c.name for c in owned} >= {"tasks.get", "tasks.cancel", "tasks.approve", "schedules.replace", "chat",
                                       "memory.ingest"}
    rows: list[tuple[str, str, str, int, bool]] = []
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        n = 0
        for command in owned:
            rule = command.owner
            assert isinstance(rule, OwnRow)
            route = command.http[0]
            for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
                for who in (OWNER, OTHER):
                    allowed = role_allows(role, command.permission) and role_allows(
                        role, rule.own if who == OWNER else rule.others)
                    headers = bearer(dispatcher, role, subject=who)
                    for surface in ("rest", "websocket"):
                        n += 1
                        request = await _row(dispatcher, command.name, n)
                        if surface == "rest":
                            path = re.sub(r"\{(\w+)(?::[^}]+)?\}", lambda m, given=request: str(given[m.group(1)]),
                                          route.path)
                            body = {k: v for k, v in request.items() if f"{{{k}" not in route.path}
                            reply = await client.request(route.method, path, headers=headers,
                                                         json=body if route.method not in ("GET", "DELETE") else None)
                            refused = reply.status == 403
                            status = reply.status
                        else:
                            ws = await client.ws_connect("/control", headers=headers)
                            await ws.receive()  # ready
                            args = {k: v for k, v in request.items() if k in command.request.model_fields}
                            await ws.send_json({"id": n, "command": command.name, "args": args})
                            frame = json.loads((await ws.receive(timeout=60)).data)
                            while frame.get("type") in ("item", "token"):
                                frame = json.loads((await ws.receive(timeout=60)).data)
                            await ws.close()
                            refused = frame.get("code") == "forbidden"
                            status = 403 if refused else 200
                        rows.append((command.name, f"{role.value}/{'owner' if who == OWNER else 'other'}",
                                     surface, status, refused != allowed))
    wrong = [row for row in rows if not row[-1]]
    assert not wrong, "\n".join(f"{c} as {w} over {s}: {st}" for c, w, s, st, _ in wrong)
    print("\nowner matrix (command, role/whose, surface, status):")
    for row in rows:
        print("  ", *row[:4])
    # The console is an admin: someone else's rows are open to it.
    task = (await dispatcher.call("tasks.create", {"kind": "ask", "query": "console"},
                                  Caller(OWNER, Role.VIEWER, "rest")))
    shown = cli(config_file, "tasks", "show", str(task.id))  # type: ignore[attr-defined]
    assert shown.returncode == 0 and json.loads(shown.stdout)["task"]["created_by"] == OWNER, shown.stderr
