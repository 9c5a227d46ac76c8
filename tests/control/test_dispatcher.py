"""The dispatcher: validation, roles, surfaces, the one error mapping, audit, streams.

A small table of test commands exercises the machinery; the store behind the audit is real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import Field

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Permission, Role
from appliance.control.command import CONSOLE_ONLY, CommandTable, Context, HttpRoute, Reply, command
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import STATUS, CommandError
from appliance.control.table import default_table
from appliance.ipc.errors import Busy, ServiceDown
from appliance.ipc.peers import Peers
from appliance.protocol.common import Empty, Message
from appliance.protocol.store import STORE_AUDIT_VERIFY

ROLES: list[Role | None] = [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN]


class Count(Message):
    k: int = Field(3, ge=1, le=10)


class Item(Message):
    n: int


closed: list[str] = []


async def echo(_: Context, request: Count) -> Reply:
    return Reply(detail=f"k={request.k}")


async def fail_with(ctx: Context, _: Empty) -> Reply:
    raise {"down": ServiceDown("store is down: cannot connect"), "busy": Busy("full", 7.0),
           "bug": KeyError("secret internal detail")}[ctx.caller.subject]


async def count(_: Context, request: Count) -> AsyncIterator[Item]:
    try:
        for n in range(request.k):
            yield Item(n=n)
            await asyncio.sleep(0)
    finally:
        closed.append("count")


def table() -> CommandTable:
    by_permission = tuple(command(f"test.{p.value}", "", Count, Reply, p, echo, mutating=p is Permission.ADMIN)
                          for p in Permission)
    return CommandTable(by_permission, (
        command("test.fail", "", Empty, Reply, Permission.PUBLIC, fail_with),
        command("test.count", "", Count, Item, Permission.VIEWER, count, streaming=True),
        command("test.console", "", Count, Reply, Permission.VIEWER, echo, surfaces=CONSOLE_ONLY),
    ))


@pytest.fixture
async def dispatcher(config: ApplianceConfig) -> AsyncIterator[Dispatcher]:
    peers = Peers(config, timeout_s=2.0)
    yield Dispatcher(table(), peers, config, logging.getLogger("test"))
    await peers.close()


def who(role: Role | None, subject: str = "alice") -> Caller:
    return Caller(subject, role, "rest", "192.0.2.7")


@pytest.mark.parametrize("permission", [Permission.PUBLIC, Permission.VIEWER, Permission.OPERATOR])
@pytest.mark.parametrize("role", ROLES)
async def test_role_matrix(dispatcher: Dispatcher, permission: Permission, role: Role | None) -> None:
    allowed = ROLES.index(role) >= list(Permission).index(permission)
    try:
        reply = await dispatcher.call(f"test.{permission.value}", {"k": 2}, who(role))
    except CommandError as exc:
        assert not allowed
        assert exc.code == ("unauthorized" if role is None else "forbidden")
        assert permission.value in exc.message
    else:
        assert allowed and isinstance(reply, Reply) and reply.detail == "k=2"


async def test_unknown_command_and_bad_fields_name_what_is_wrong(dispatcher: Dispatcher) -> None:
    with pytest.raises(CommandError) as unknown:
        await dispatcher.call("test.nothing", {}, who(Role.ADMIN))
    assert (unknown.value.code, unknown.value.field) == ("not_found", "command")
    for payload, field in (({"k": 0}, "k"), ({"k": "many"}, "k"), ({"k": 1, "extra": 1}, "extra")):
        with pytest.raises(CommandError) as bad:
            await dispatcher.call("test.viewer", payload, who(Role.VIEWER))
        assert (bad.value.code, bad.value.field, bad.value.status) == ("bad_request", field, 400)
        assert field in bad.value.message


async def test_console_only_commands_are_invisible_elsewhere(dispatcher: Dispatcher) -> None:
    with pytest.raises(CommandError) as hidden:
        await dispatcher.call("test.console", {}, who(Role.ADMIN))
    assert hidden.value.code == "not_found"
    assert isinstance(await dispatcher.call("test.console", {}, Caller.local()), Reply)


async def test_every_failure_maps_to_one_vocabulary(dispatcher: Dispatcher) -> None:
    expected = {"down": ("service_down", 503, None), "busy": ("busy", 429, 7.0), "bug": ("internal", 500, None)}
    for subject, (code, status, retry) in expected.items():
        with pytest.raises(CommandError) as caught:
            await dispatcher.call("test.fail", {}, who(None, subject))
        assert (caught.value.code, caught.value.status, caught.value.retry_after) == (code, status, retry)
    assert "secret" not in str(caught.value)  # an internal error never leaks its detail
    assert set(STATUS) >= {"bad_request", "unauthorized", "forbidden", "not_found", "busy", "unavailable"}


async def test_leaving_a_stream_closes_the_handler_at_once(dispatcher: Dispatcher) -> None:
    closed.clear()
    stream = dispatcher.stream("test.count", {"k": 10}, who(Role.VIEWER))
    assert [item async for item in stream] == [Item(n=n) for n in range(10)]
    stream = dispatcher.stream("test.count", {"k": 10}, who(Role.VIEWER))
    async for _ in stream:
        break
    await stream.aclose()
    assert closed == ["count", "count"]  # the second one closed by aclose, not by the garbage collector


@pytest.mark.slow
async def test_mutating_commands_are_audited_with_their_outcome(config: ApplianceConfig,
                                                                services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    dispatcher = Dispatcher(table(), peers, config, logging.getLogger("test"))
    await dispatcher.call("test.admin", {"k": 1}, who(Role.ADMIN))
    with pytest.raises(CommandError):
        await dispatcher.call("test.admin", {"k": 1}, who(Role.OPERATOR))  # refused before it runs: no row
    await dispatcher.call("test.viewer", {"k": 1}, who(Role.ADMIN))  # reads are not audited
    verdict = await peers.store.call(STORE_AUDIT_VERIFY)
    assert (verdict.ok, verdict.rows) == (True, 1)


def test_the_appliance_table_is_well_formed() -> None:
    """Every command has a JSON schema for its arguments (the agent's tool schema) and its reply."""
    commands = list(default_table())
    assert len({c.name for c in commands}) == len(commands)
    for c in commands:
        assert c.request.model_json_schema()["type"] == "object", c.name
        if isinstance(c.response, type):
            assert c.response.model_json_schema(), c.name
        for route in c.http:
            assert route.path.startswith("/api/v1/") and isinstance(route, HttpRoute), c.name
        assert c.summary, c.name


def test_a_route_cannot_serve_two_commands() -> None:
    first = command("a.one", "x", Empty, Reply, Permission.VIEWER, echo, http=(HttpRoute("GET", "/api/v1/x"),))
    second = command("a.two", "x", Empty, Reply, Permission.VIEWER, echo, http=(HttpRoute("GET", "/api/v1/x"),))
    with pytest.raises(ValueError, match="already serves"):
        CommandTable((first, second))
    with pytest.raises(ValueError, match="declared twice"):
        CommandTable((first, first))




async def test_an_invalid_request_lists_each_problem_once(dispatcher: Dispatcher) -> None:
    with pytest.raises(CommandError) as bad:
        await dispatcher.call("test.viewer", {"k": 0, "extra": 1, "password": "hunter2"}, who(Role.VIEWER))
    assert [problem["field"] for problem in bad.value.problems or []] == ["k", "extra", "password"]
    assert bad.value.as_dict()["problems"][1] == {"field": "extra", "message": "unknown key"}
    assert "hunter2" not in str(bad.value.as_dict())  # a secret's value is never repeated back
    with pytest.raises(CommandError) as fine:
        await dispatcher.call("test.fail", {}, who(None, "down"))
    assert "problems" not in fine.value.as_dict()
