"""Task commands over REST against a real store (and, for stopping a running task, a real agent):
the reference form, who may create what, hostile bodies, cancel and retry."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from tests.helpers import (
    api_client,
    bearer,
    declarations,
    eventually,
    eventually_async,
    pids_with,
    serve,
    update_config,
)

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]


async def test_create_in_the_reference_form_and_by_role(config_file: Path, services: StartServices) -> None:
    update_config(config_file, agent={"actions": {"rotate_logs": {"command": ["true"], "roles": ["admin"]}}})
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        viewer, operator, admin = (bearer(dispatcher, role) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN))
        reply = await client.post("/api/v1/tasks", headers=viewer, json={
            "command": "search", "query": "door events this week", "output_path": "doors.md"})
        assert reply.status == 201, await reply.text()
        task = await reply.json()
        assert (task["spec"]["kind"], task["state"], task["spec"]["output_path"]) == ("search", "queued", "doors.md")
        got = await client.get(f"/api/v1/tasks/{task['id']}", headers=viewer)
        assert [step["message"] for step in (await got.json())["steps"]] == ["queued"]

        allowed = [(admin, {"kind": "shell", "argv": ["python", "check_logs.py"]}),
                   (operator, {"kind": "notify", "message": "dock door open"}),
                   (operator, {"kind": "action", "action": "send_alert"}),
                   (viewer, {"kind": "action", "action": "heartbeat"}),
                   (admin, {"kind": "action", "action": "rotate_logs"})]
        for who, body in allowed:
            reply = await client.post("/api/v1/tasks", headers=who, json=body)
            assert reply.status == 201, (body, await reply.text())
        refused = [(operator, {"kind": "shell", "argv": ["id"]}, "a shell task needs the admin role"),
                   (viewer, {"kind": "notify", "message": "x"}, "operator"),
                   (viewer, {"kind": "action", "action": "archive"}, "operator"),
                   (operator, {"kind": "action", "action": "rotate_logs"}, "may not run 'rotate_logs'")]
        for who, body, why in refused:
            reply = await client.post("/api/v1/tasks", headers=who, json=body)
            error = (await reply.json())["error"]
            assert reply.status == 403 and why in error["message"], (body, error)
        assert (await client.post("/api/v1/tasks", json={"kind": "ask", "query": "x"})).status == 401


async def test_hostile_bodies_are_refused_by_name(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers, max_body_bytes=64 * 1024) as (client, dispatcher):
        admin = bearer(dispatcher, Role.ADMIN)
        cases: list[tuple[Any, str]] = [
            ({}, "kind"),
            ({"kind": "explode"}, "kind"),
            ({"command": "search"}, "query"),
            ({"kind": "shell", "argv": []}, "argv"),
            ({"kind": "shell", "argv": ["sh", "-c\x00rm -rf /"]}, "argv"),
            ({"kind": "shell", "argv": ["x" * 5000]}, "argv"),
            ({"kind": "shell", "argv": ["true"] * 300}, "argv"),
            ({"kind": "ask", "query": "x" * 4001}, "query"),
            ({"kind": "ask", "query": "x", "priority": "urgent!!"}, "priority"),
            ({"kind": "ask", "query": "x", "timeout_s": -1}, "timeout_s"),
            ({"kind": "ask", "query": "x", "timeout_s": 1e308}, "timeout_s"),
            ({"kind": "ask", "query": "x", "shell": "; rm -rf /"}, "shell"),
            ({"kind": "notify", "message": "x", "topic": "devices/#"}, "topic"),
            ({"kind": "action", "action": "../../bin/sh"}, "action"),
            ({"kind": "action", "action": "no_such_action"}, "action"),
            ({"kind": "search", "query": "x", "output_path": "x" * 2000}, "output_path"),
            ({"kind": "ask", "query": "x", "max_attempts": 10**9}, "max_attempts"),
            (["kind", "ask"], "body"),
        ]
        for body, named in cases:
            reply = await client.post("/api/v1/tasks", headers=admin, json=body)
            assert reply.status == 400, (body, reply.status)
            error = (await reply.json())["error"]
            assert named in error["message"] or named in (error.get("field") or ""), (body, error)
        assert (await client.post("/api/v1/tasks", headers=admin, data=b"{\"kind\": ")).status == 400
        too_big = await client.post("/api/v1/tasks", headers=admin, data=b"{\"kind\": \"ask\", \"query\": \""
                                    + b"x" * 100_000 + b"\"}")
        assert too_big.status == 413
        for path in ("/api/v1/tasks/0", f"/api/v1/tasks/{2**64}", "/api/v1/tasks/-1", "/api/v1/tasks/abc"):
            assert (await client.get(path, headers=admin)).status == 400, path
        assert (await client.get("/api/v1/tasks/999", headers=admin)).status == 404
        assert (await client.get("/api/v1/tasks", headers=admin, params={"state": "exploded"})).status == 400
        assert (await client.get("/api/v1/tasks", headers=admin, params={"limit": "100000"})).status == 400


async def test_cancel_and_retry(tmp_path: Path, config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    marker = f"marker-{uuid.uuid4().hex}"
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        admin, operator = bearer(dispatcher, Role.ADMIN), bearer(dispatcher, Role.OPERATOR)

        async def post(path: str, body: Any = None, who: dict[str, str] = operator) -> tuple[int, Any]:
            reply = await client.post(path, headers=who, json=body)
            return reply.status, await reply.json()

        _, waiting = await post("/api/v1/tasks", {"kind": "notify", "message": "later"})
        status, cancelled = await post(f"/api/v1/tasks/{waiting['id']}/cancel")
        assert status == 200 and cancelled["state"] == "cancelled" and "cancelled by" in cancelled["error"]
        status, again = await post(f"/api/v1/tasks/{waiting['id']}/cancel")
        assert status == 409, again
        status, retried = await post(f"/api/v1/tasks/{waiting['id']}/retry")
        assert status == 201 and retried["id"] != waiting["id"] and retried["state"] == "queued"
        status, refused = await post(f"/api/v1/tasks/{retried['id']}/retry")
        assert status == 409 and "only a failed, cancelled or timed-out" in refused["error"]["message"]
        await post(f"/api/v1/tasks/{retried['id']}/cancel")

        # A running task: the agent stops it and its sandbox dies.
        _, sleeper = await post("/api/v1/tasks", {"kind": "shell", "argv": ["sh", "-c", f"sleep 300; : {marker}"]},
                                admin)
        agent = serve(config_file, "agent", log=tmp_path / "agent.log")
        try:
            async def running() -> bool:
                reply = await client.get(f"/api/v1/tasks/{sleeper['id']}", headers=operator)
                return bool((await reply.json())["task"]["state"] == "running" and pids_with(marker))

            await eventually_async(running, 30, "the sleeper to run")
            status, stopped = await post(f"/api/v1/tasks/{sleeper['id']}/cancel")
            assert status == 200 and stopped["state"] == "cancelled", stopped
            eventually(lambda: not pids_with(marker), 10, "the sandbox to be killed")
        finally:
            agent.terminate()
            agent.wait(15)



async def test_an_action_that_needs_approval_waits_for_a_second_person(tmp_path: Path, config_file: Path,
                                                                        services: StartServices) -> None:
    """The agent parks the task in waiting_approval; its creator and a viewer cannot let it run,
    another operator can (it then runs and says who approved it); a rejection cancels with why."""
    update_config(config_file, agent={"actions": {"open_valve": {"command": ["true"], "roles": ["admin", "operator"],
                                                                "approval": True}}})
    peers = await services("store")
    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            ada, bob = bearer(dispatcher, Role.OPERATOR, "ada"), bearer(dispatcher, Role.OPERATOR, "bob")
            viewer = bearer(dispatcher, Role.VIEWER, "vic")

            async def state_of(ident: int) -> dict[str, Any]:
                return dict((await (await client.get(f"/api/v1/tasks/{ident}", headers=ada)).json())["task"])

            async def parked() -> dict[str, Any]:
                reply = await client.post("/api/v1/tasks", headers=ada, json={"kind": "action", "action": "open_valve"})
                task = await reply.json()

                async def waiting() -> bool:
                    return (await state_of(task["id"]))["state"] == "waiting_approval"

                await eventually_async(waiting, 30, "the task to wait for approval")
                return dict(task)

            first = await parked()
            own = await client.post(f"/api/v1/tasks/{first['id']}/approve", headers=ada)
            assert own.status == 403 and "someone else" in (await own.json())["error"]["message"]
            assert (await client.post(f"/api/v1/tasks/{first['id']}/approve", headers=viewer)).status == 403
            approved = await client.post(f"/api/v1/tasks/{first['id']}/approve", headers=bob,
                                         json={"reason": "checked the pressure"})
            assert approved.status == 200, await approved.text()

            async def succeeded() -> bool:
                return (await state_of(first["id"]))["state"] == "succeeded"

            await eventually_async(succeeded, 30, "the approved task to run")
            detail = await (await client.get(f"/api/v1/tasks/{first['id']}", headers=ada)).json()
            assert detail["task"]["approved_by"] == "bob"
            messages = [step["message"] for step in detail["steps"]]
            assert "approved: checked the pressure" in messages and messages[-1] == "succeeded", messages
            again = await client.post(f"/api/v1/tasks/{first['id']}/approve", headers=bob)
            assert again.status == 409

            second = await parked()
            rejected = await client.post(f"/api/v1/tasks/{second['id']}/reject", headers=bob,
                                         json={"reason": "not today"})
            body = await rejected.json()
            assert rejected.status == 200 and body["state"] == "cancelled", body
            assert body["error"] == "rejected by bob: not today"
            hostile = await client.post(f"/api/v1/tasks/{second['id']}/reject", headers=bob, json={"reason": "x" * 501})
            assert hostile.status == 400 and (await hostile.json())["error"]["field"] == "reason"
    finally:
        agent.terminate()
        agent.wait(15)


async def test_everything_checkable_is_checked_at_creation(tmp_path: Path, config_file: Path,
                                                           services: StartServices) -> None:
    """The reference design's own example (/data/results) and every hostile output_path, unknown
    actions, arguments against an action's schema, fields of another kind: 400 naming the field,
    and no task row written."""
    outputs = tmp_path / "outputs"
    (outputs / "reports").mkdir(parents=True)
    (outputs / "escape").symlink_to(tmp_path)
    update_config(config_file, agent={"output_dirs": [str(outputs)], "actions": {"open_valve": {
        "command": ["true", "{valve}"], "roles": ["admin", "operator"],
        "args_schema": {"type": "object", "properties": {"valve": {"type": "string", "pattern": "^V-[0-9]+$"}},
                        "required": ["valve"], "additionalProperties": False}}}})
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        operator = bearer(dispatcher, Role.OPERATOR)
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"command": "search", "query": "x", "output_path": "/data/results"}, "output_path", "outside"),
            ({"command": "search", "query": "x", "output_path": "/etc/cron.d/evil"}, "output_path", "outside"),
            ({"command": "search", "query": "x", "output_path": "../escape.md"}, "output_path", ".."),
            ({"command": "search", "query": "x", "output_path": "reports/../../x.md"}, "output_path", ".."),
            ({"command": "search", "query": "x", "output_path": "escape/owned.md"}, "output_path", "symlink"),
            ({"command": "search", "query": "x", "output_path": "a\x00b.md"}, "output_path", "NUL"),
            ({"command": "search", "query": "x", "output_path": "r" * 5000}, "output_path", "1024"),
            ({"command": "search", "query": "x", "output_path": "reports/"}, "output_path", "names no file"),
            ({"kind": "action", "action": "open_valves"}, "action", "no action"),
            ({"kind": "action", "action": "open_valve"}, "args", "'valve' is a required property"),
            ({"kind": "action", "action": "open_valve", "args": {"valve": "V-1; rm"}}, "args.valve", "does not match"),
            ({"kind": "action", "action": "open_valve", "args": {"valve": "V-1", "x": 1}}, "args", "unexpected"),
            ({"kind": "action", "action": "heartbeat", "args": {"x": 1}}, "args", "unexpected"),
            ({"kind": "ask", "query": "x", "output_path": "a.md"}, "output_path", "not a field of an ask task"),
            ({"kind": "notify", "message": "x", "argv": ["id"]}, "argv", "not a field of a notify task"),
            ({"kind": "ask", "command": "search", "query": "x"}, "command", "give one"),
        ]
        for body, field, words in cases:
            reply = await client.post("/api/v1/tasks", headers=operator, json=body)
            error = (await reply.json())["error"]
            assert reply.status == 400 and error.get("field") == field and words in error["message"], (body, error)
        listed = await (await client.get("/api/v1/tasks", headers=bearer(dispatcher, Role.ADMIN))).json()
        assert listed["items"] == []  # nothing was written for any of them
        fine = await client.post("/api/v1/tasks", headers=operator, json={
            "command": "search", "query": "x", "output_path": f"{outputs}/reports/week.md"})
        assert fine.status == 201, await fine.text()


async def test_a_task_is_its_creators_and_operators(config_file: Path, services: StartServices) -> None:
    """Everyone sees every task's state; only its creator and operators read its spec, log and result,
    and cancel or retry it (docs/architecture.md, "Owner rules")."""
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        alice, bob = bearer(dispatcher, Role.VIEWER, "alice"), bearer(dispatcher, Role.VIEWER, "bob")
        operator = bearer(dispatcher, Role.OPERATOR, "olga")
        task = await (await client.post("/api/v1/tasks", headers=alice, json={
            "kind": "ask", "query": "where is the pallet jack?"})).json()
        one = f"/api/v1/tasks/{task['id']}"
        assert (await client.get(one, headers=alice)).status == 200
        refused = await client.get(one, headers=bob)
        error = (await refused.json())["error"]
        assert refused.status == 403 and error["field"] == "id" and "not yours" in error["message"]
        assert (await client.get(one, headers=operator)).status == 200
        seen = {row["id"]: row for row in (await (await client.get("/api/v1/tasks", headers=bob)).json())["items"]}
        assert seen[task["id"]]["state"] == "queued" and seen[task["id"]]["spec"] == {
            "kind": "ask", "timeout_s": 300.0, "priority": "interactive", "input": None}
        mine = {row["id"]: row for row in (await (await client.get("/api/v1/tasks", headers=alice)).json())["items"]}
        assert mine[task["id"]]["spec"]["query"] == "where is the pallet jack?"
        assert (await client.post(f"{one}/cancel", headers=bob)).status == 403
        cancelled = await client.post(f"{one}/cancel", headers=alice)
        assert cancelled.status == 200 and (await cancelled.json())["state"] == "cancelled"
        assert (await client.post(f"{one}/retry", headers=bob)).status == 403
        assert (await client.post(f"{one}/retry", headers=alice)).status == 201


async def test_an_agent_goal_is_checked_at_creation(config_file: Path, services: StartServices) -> None:
    """A goal is 1 to 2,000 characters with something besides white space; any signed-in role may
    give one (what the run may do is that role's tools); over /control it is the reference form."""
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        viewer = bearer(dispatcher, Role.VIEWER)
        for goal, field in (("", "goal"), ("   \n", "goal"), ("x" * 100_000, "goal"), (42, "goal")):
            reply = await client.post("/api/v1/tasks", headers=viewer, json={"kind": "agent", "goal": goal})
            error = (await reply.json())["error"]
            assert reply.status in (400, 413) and (reply.status == 413 or error["field"] == field), (goal, error)
        reply = await client.post("/api/v1/tasks", headers=viewer, json={"kind": "agent", "goal": "Is it cold?",
                                                                         "query": "x"})
        assert reply.status == 400 and (await reply.json())["error"]["field"] == "query"
        made = await client.post("/api/v1/tasks", headers=viewer, json={"command": "agent", "goal": "Включи свет"})
        assert made.status == 201 and (await made.json())["spec"] == {
            "kind": "agent", "goal": "Включи свет", "timeout_s": 300.0, "priority": "interactive", "input": None}


# What each tasks command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_TASKS = {
    'tasks.create': ('write', 'viewer', None, None),
    'tasks.get': ('read', 'viewer', 'OwnRow', 'get_task'),
    'tasks.list': ('read', 'viewer', 'OwnRows', 'list_tasks'),
    'tasks.cancel': ('write', 'viewer', 'OwnRow', None),
    'tasks.retry': ('write', 'viewer', 'OwnRow', None),
    'tasks.approve': ('write', 'operator', 'OwnRow', None),
    'tasks.reject': ('write', 'operator', 'OwnRow', None),
}


def test_the_tasks_commands_are_declared_as_decided() -> None:
    assert declarations('tasks') == DECLARED_TASKS
