"""The dispatcher: validation, roles, surfaces, owner rules, provenance, the one error mapping,
audit, streams.

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
from appliance.control.command import (
    CONSOLE_ONLY,
    CommandTable,
    Context,
    Effect,
    HttpRoute,
    OwnRow,
    OwnRows,
    Reply,
    Tool,
    command,
)
from appliance.control.dispatcher import Dispatcher, call_fingerprint
from appliance.control.errors import STATUS, CommandError
from appliance.control.table import default_table
from appliance.ipc.errors import Busy, ServiceDown
from appliance.ipc.peers import Peers
from appliance.protocol.common import Empty, Message
from appliance.protocol.store import STORE_AUDIT_LIST, STORE_AUDIT_VERIFY, AuditQuery

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


class Row(Message):
    id: int = Field(ge=1)


class Rows(Message):
    items: list[dict[str, str]]


OWNERS = {1: "alice", 2: "bob", 3: ""}  # 3: the box's own row; 4: no such row


async def owner_of(_: Context, request: Row) -> str | None:
    return OWNERS.get(request.id)


async def read_row(_: Context, request: Row) -> Reply:
    return Reply(detail=f"row {request.id}")


async def all_rows(_: Context, _request: Empty) -> Rows:
    return Rows(items=[{"owner": owner, "secret": f"s{n}"} for n, owner in OWNERS.items()])


def own_rows_only(caller: Caller, reply: Rows) -> Rows:
    return Rows(items=[row if row["owner"] == caller.subject else {"owner": row["owner"]} for row in reply.items])


def table() -> CommandTable:
    by_permission = tuple(command(f"test.{p.value}", "", Count, Reply, p, echo,
                                  effect=Effect.WRITE if p is Permission.ADMIN else Effect.READ)
                          for p in Permission)
    return CommandTable(by_permission, (
        command("test.fail", "", Empty, Reply, Permission.PUBLIC, fail_with, effect=Effect.READ),
        command("test.count", "", Count, Item, Permission.VIEWER, count, streaming=True, effect=Effect.READ),
        command("test.console", "", Count, Reply, Permission.VIEWER, echo, surfaces=CONSOLE_ONLY, effect=Effect.READ),
        command("test.row", "", Row, Reply, Permission.VIEWER, read_row, effect=Effect.READ,
                owner=OwnRow("row", "id", owner_of, own=Permission.VIEWER, others=Permission.OPERATOR)),
        command("test.rows", "", Empty, Rows, Permission.VIEWER, all_rows, effect=Effect.READ,
                owner=OwnRows("row", Permission.OPERATOR, own_rows_only)),
        command("test.actuate", "", Count, Reply, Permission.VIEWER, echo, effect=Effect.ACTUATE),
        command("test.external", "", Count, Reply, Permission.VIEWER, echo, effect=Effect.EXTERNAL),
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
    await dispatcher.call("test.viewer", {"k": 1}, who(Role.ADMIN))  # a person's reads are not audited
    verdict = await peers.store.call(STORE_AUDIT_VERIFY)
    assert (verdict.ok, verdict.rows) == (True, 1)
    # Every call made for a task is, reads and refusals included, with the task and the effect.
    for_task = who(Role.VIEWER).for_task(42, untrusted=True)
    await dispatcher.call("test.viewer", {"k": 1}, for_task)
    with pytest.raises(CommandError):
        await dispatcher.call("test.external", {"k": 1}, for_task)
    rows = (await peers.store.call(STORE_AUDIT_LIST, AuditQuery(limit=10))).items
    assert [(r.action, r.details["task"], r.details["effect"], r.details["ok"]) for r in rows[:2]] == [
        ("test.external", 42, "external", False), ("test.viewer", 42, "read", True)]
    assert rows[0].details["error"] == "approval_required" and rows[0].user_id == "alice"


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
    first = command("a.one", "x", Empty, Reply, Permission.VIEWER, echo, http=(HttpRoute("GET", "/api/v1/x"),),
                    effect=Effect.READ)
    second = command("a.two", "x", Empty, Reply, Permission.VIEWER, echo, http=(HttpRoute("GET", "/api/v1/x"),),
                     effect=Effect.READ)
    with pytest.raises(ValueError, match="already serves"):
        CommandTable((first, second))
    with pytest.raises(ValueError, match="declared twice"):
        CommandTable((first, first))


def test_a_tool_face_names_request_fields_and_is_unique() -> None:
    face = Tool("count", "Counts.", ("k",))
    one = command("a.one", "x", Count, Reply, Permission.VIEWER, echo, effect=Effect.READ, tool=face)
    two = command("a.two", "x", Count, Reply, Permission.VIEWER, echo, effect=Effect.READ, tool=face)
    with pytest.raises(ValueError, match="tool 'count'"):
        CommandTable((one, two))
    bad = command("a.bad", "x", Count, Reply, Permission.VIEWER, echo, effect=Effect.READ,
                  tool=Tool("bad", "x", ("nope",)))
    with pytest.raises(ValueError, match="not request fields"):
        CommandTable((bad,))


@pytest.mark.parametrize(("role", "row", "allowed"), [
    (Role.VIEWER, 1, True), (Role.VIEWER, 2, False), (Role.VIEWER, 3, False), (Role.VIEWER, 4, True),
    (Role.OPERATOR, 1, True), (Role.OPERATOR, 2, True), (Role.OPERATOR, 3, True), (Role.ADMIN, 2, True)])
async def test_an_owner_rule_is_checked_before_the_handler(dispatcher: Dispatcher, role: Role, row: int,
                                                          allowed: bool) -> None:
    """alice owns row 1, bob row 2, the box row 3; row 4 does not exist (the handler would say so)."""
    try:
        reply = await dispatcher.call("test.row", {"id": row}, who(role))
    except CommandError as exc:
        assert not allowed
        assert (exc.code, exc.status, exc.field) == ("forbidden", 403, "id")
        assert "not yours" in exc.message and "operator" in exc.message
    else:
        assert allowed and reply == Reply(detail=f"row {row}")


async def test_a_list_owner_rule_reduces_other_peoples_rows(dispatcher: Dispatcher) -> None:
    viewer = await dispatcher.call("test.rows", {}, who(Role.VIEWER))
    assert viewer == Rows(items=[{"owner": "alice", "secret": "s1"}, {"owner": "bob"}, {"owner": ""}])
    operator = await dispatcher.call("test.rows", {}, who(Role.OPERATOR, "carol"))
    assert [row.get("secret") for row in operator.items] == ["s1", "s2", "s3"]  # type: ignore[attr-defined]


async def test_a_tainted_task_may_not_act_or_send_without_an_approved_call(dispatcher: Dispatcher) -> None:
    person = who(Role.OPERATOR)
    clean, tainted = person.for_task(7), person.for_task(7, untrusted=True)
    for name in ("test.actuate", "test.external"):
        assert await dispatcher.call(name, {"k": 2}, clean) == Reply(detail="k=2")
        with pytest.raises(CommandError) as refused:
            await dispatcher.call(name, {"k": 2}, tainted)
        assert (refused.value.code, refused.value.status) == ("approval_required", 403)
        assert "untrusted" in refused.value.message and "task 7" in refused.value.message
        approved = person.for_task(7, untrusted=True, approved=frozenset({call_fingerprint(name, Count(k=2))}))
        assert await dispatcher.call(name, {"k": 2}, approved) == Reply(detail="k=2")
        with pytest.raises(CommandError):  # an approval binds those arguments only
            await dispatcher.call(name, {"k": 3}, approved)
    assert await dispatcher.call("test.viewer", {"k": 1}, tainted) == Reply(detail="k=1")  # reads stay open




async def test_an_invalid_request_lists_each_problem_once(dispatcher: Dispatcher) -> None:
    with pytest.raises(CommandError) as bad:
        await dispatcher.call("test.viewer", {"k": 0, "extra": 1, "password": "hunter2"}, who(Role.VIEWER))
    assert [problem["field"] for problem in bad.value.problems or []] == ["k", "extra", "password"]
    assert bad.value.as_dict()["problems"][1] == {"field": "extra", "message": "unknown key",
                                                  "phrase": {"code": "validation.extra_forbidden", "args": {}}}
    assert "hunter2" not in str(bad.value.as_dict())  # a secret's value is never repeated back
    with pytest.raises(CommandError) as fine:
        await dispatcher.call("test.fail", {}, who(None, "down"))
    assert "problems" not in fine.value.as_dict()
