"""The capabilities command: one list per caller, computed from the declarations (role, surface,
owner rules, kinds, actions), the same answer over REST and /control, and nothing a caller may
not do; the agent's tool faces and the box's vocabularies come with it."""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from appliance.config import load_config, parse_config
from appliance.control.caller import Caller, Permission, Role, role_allows
from appliance.control.capabilities import Capabilities, may_call
from appliance.control.command import Effect
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import ErrorCode
from appliance.control.table import default_table
from appliance.control.topics import TOPICS
from appliance.ipc.peers import Peers
from appliance.protocol.tasks import TaskState
from appliance.taskkinds import KINDS
from tests.helpers import api_client, bearer, update_config

StartServices = Callable[..., Awaitable[Peers]]
ROLES: list[Role | None] = [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN]


async def capabilities(role: Role | None, via: str = "rest", subject: str = "alice") -> Capabilities:
    config = parse_config("agent:\n  actions:\n    open_valve:\n      command: ['true']\n      roles: [admin]\n"
                          "      approval: true\n")
    dispatcher = Dispatcher(default_table(), Peers(config), config, logging.getLogger("test"))
    reply = await dispatcher.call("capabilities", {}, Caller(subject, role, via))  # type: ignore[arg-type]
    assert isinstance(reply, Capabilities)
    return reply


@pytest.mark.parametrize("role", ROLES)
async def test_each_caller_gets_exactly_what_it_may_do(role: Role | None) -> None:
    listed = await capabilities(role)
    table = {c.name: c for c in default_table()}
    names = {face.name for face in listed.commands}
    assert names == {name for name, c in table.items() if may_call(c, Caller("alice", role, "rest"))}
    for face in listed.commands:
        command = table[face.name]
        assert role_allows(role, command.permission) and "rest" in command.surfaces
        assert face.effect is command.effect
        assert (face.tool is None) == (command.tool is None)
    if role is None:
        assert names == {c.name for c in table.values() if c.permission is Permission.PUBLIC and "rest" in c.surfaces}
        assert listed.task_kinds == [] and listed.actions == [] and listed.topics == []
        return
    assert {kind.name for kind in listed.task_kinds} == {
        k.name for k in KINDS.values() if role_allows(role, Permission(k.least_role.value))}
    assert {t for t in listed.topics} == {name for name, topic in TOPICS.items()
                                          if role_allows(role, table[topic.command].permission)}
    actions = {action.name: action for action in listed.actions}
    assert ("open_valve" in actions) is (role is Role.ADMIN)
    assert ("send_alert" in actions) is (role is not Role.VIEWER) and "heartbeat" in actions
    if "open_valve" in actions:
        assert actions["open_valve"].approval and not actions["open_valve"].builtin


async def test_owner_rules_say_what_this_caller_may_do_to_whose_rows() -> None:
    by_role = {role: {f.name: f for f in (await capabilities(role)).commands} for role in
               (Role.VIEWER, Role.OPERATOR, Role.ADMIN)}
    viewer, operator, admin = by_role[Role.VIEWER], by_role[Role.OPERATOR], by_role[Role.ADMIN]
    assert viewer["tasks.get"].owner is not None and (viewer["tasks.get"].owner.own, viewer["tasks.get"].owner.others) \
        == (True, False)
    assert operator["tasks.get"].owner.others  # type: ignore[union-attr]
    assert "tasks.approve" not in viewer
    assert (operator["tasks.approve"].owner.own, operator["tasks.approve"].owner.others) == (False, True)  # type: ignore[union-attr]
    assert admin["tasks.approve"].owner.own  # type: ignore[union-attr]
    assert (operator["schedules.replace"].owner.own, operator["schedules.replace"].owner.others) == (True, False)  # type: ignore[union-attr]
    assert viewer["tasks.list"].owner is not None and not viewer["tasks.list"].owner.others


async def test_tool_faces_are_derived_from_the_request_models() -> None:
    listed = await capabilities(Role.OPERATOR, via="agent")
    tools = {face.tool.name: face for face in listed.commands if face.tool is not None}
    assert {"search_memory", "notify", "send_device_command", "get_task"} <= set(tools)
    assert len(tools) == len({face.name for face in tools.values()})
    table = {c.name: c for c in default_table()}
    for name, face in tools.items():
        assert face.tool is not None
        schema = face.tool.parameters
        jsonschema.Draft202012Validator.check_schema(schema)
        assert set(schema["properties"]) == set(table[face.name].tool.fields)  # type: ignore[union-attr]
        assert schema["additionalProperties"] is False and "$ref" not in json.dumps(schema), name
        assert len(json.dumps(schema)) < 1200, name  # compact: a small model reads every one of them
    search = tools["search_memory"].tool.parameters  # type: ignore[union-attr]
    assert search["required"] == ["q"] and search["properties"]["k"]["maximum"] == 100
    # The agent surface sees the commands only it is offered (devices.publish), REST does not.
    assert "devices.publish" in {f.name for f in listed.commands}
    assert "devices.publish" not in {f.name for f in (await capabilities(Role.OPERATOR)).commands}


async def test_the_vocabularies_are_the_boxs_own() -> None:
    words = (await capabilities(Role.VIEWER)).vocabularies
    assert words.task_states == [state.value for state in TaskState]
    assert words.roles == ["admin", "operator", "viewer"] and words.effects == [e.value for e in Effect]
    assert words.error_codes == list(typing.get_args(ErrorCode)) and "approval_required" in words.error_codes
    assert words.task_kinds == sorted(KINDS) and "shell" in words.task_kinds and "command" not in words.task_kinds


def test_no_task_kind_shadows_a_command() -> None:
    """/control reads {"command": NAME, ...} as a task of kind NAME: a kind must not be a command's name."""
    assert not set(KINDS) & {c.name for c in default_table()}


@pytest.mark.slow
async def test_rest_and_control_answer_the_same(config_file: Path, services: StartServices) -> None:
    update_config(config_file, agent={"actions": {"open_valve": {"command": ["true"], "roles": ["operator"]}}})
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
            headers = bearer(dispatcher, role)
            rest: dict[str, Any] = await (await client.get("/api/v1/capabilities", headers=headers)).json()
            ws = await client.ws_connect("/control", headers=headers)
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            await ws.send_json({"id": 1, "command": "capabilities"})
            frame = json.loads((await ws.receive(timeout=30)).data)
            await ws.close()
            socket: dict[str, Any] = frame["content"]
            assert (rest["surface"], socket["surface"]) == ("rest", "websocket")
            # The same list, but for what only REST can do (an upload as the body: system.update).
            rest_only = {c.name for c in default_table() if "rest" in c.surfaces and "websocket" not in c.surfaces}
            assert [c for c in rest["commands"] if c["name"] not in rest_only] == socket["commands"]
            assert rest["task_kinds"] == socket["task_kinds"]
            assert ("open_valve" in {a["name"] for a in rest["actions"]}) is (role is Role.OPERATOR)
        anonymous = await (await client.get("/api/v1/capabilities")).json()
        assert anonymous["role"] is None and "auth.login" in {c["name"] for c in anonymous["commands"]}
        assert "memory.search" not in {c["name"] for c in anonymous["commands"]}
