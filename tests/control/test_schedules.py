"""Schedule commands over REST against a real store and a real agent: the file's schedules are
listed and read-only, saved ones are created, replaced and deleted, the agent runs a saved one
with its author's role at once, and hostile bodies are refused by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from tests.helpers import api_client, bearer, declarations, eventually_async, serve, update_config

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]
FILE = """
tasks:
  - name: log_monitor
    trigger: "cron:*/5 * * * *"
    action: "python check_logs.py"
    fallback: send_alert
"""


async def test_saved_schedules_run_with_their_authors_role(tmp_path: Path, config_file: Path,
                                                           services: StartServices) -> None:
    (tmp_path / "schedules.yaml").write_text(FILE)
    update_config(config_file, agent={"schedules_file": str(tmp_path / "schedules.yaml")})
    peers = await services("store")
    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            viewer, operator, admin = (bearer(dispatcher, role) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN))
            other_operator = bearer(dispatcher, Role.OPERATOR, "bob")

            async def call(method: str, path: str, who: dict[str, str], body: Any = None) -> tuple[int, Any]:
                reply = await client.request(method, path, headers=who, json=body)
                return reply.status, await reply.json()

            status, listed = await call("GET", "/api/v1/schedules", viewer)
            [monitor] = listed["items"]
            assert status == 200 and monitor["source"] == "file" and monitor["schedule"]["run_as"] == "admin"
            assert monitor["next_fire"] is not None and listed["file_error"] == ""

            ping = {"name": "ping", "trigger": "interval:1s", "action": "heartbeat", "concurrency": "queue"}
            status, saved = await call("POST", "/api/v1/schedules", operator, ping)
            assert status == 201 and saved["source"] == "saved" and saved["schedule"]["run_as"] == "operator", saved

            async def fired() -> list[Any]:
                reply = await client.get("/api/v1/tasks", headers=viewer, params={"schedule": "ping"})
                return [task for task in (await reply.json())["items"] if task["state"] == "succeeded"]

            [task, *_] = await eventually_async(fired, 30, "the saved schedule to fire and its task to succeed")
            assert (task["role"], task["created_by"]) == ("operator", "schedule:ping")

            status, again = await call("POST", "/api/v1/schedules", operator, ping)
            assert status == 409 and "exists already" in again["error"]["message"]
            status, _ = await call("PUT", "/api/v1/schedules/ping", operator, {**ping, "enabled": False})
            assert status == 200
            status, one = await call("GET", "/api/v1/schedules/ping", viewer)
            assert one["schedule"]["enabled"] is False and one["next_fire"] is None and one["updated_by"] == "alice"

            refused = [
                ("POST", "/api/v1/schedules", operator, {**ping, "name": "lm", "action": "python check_logs.py"},
                 403, "action: a shell task needs the admin role"),
                ("POST", "/api/v1/schedules", operator, {**ping, "name": "fb", "fallback": "rm -rf /"}, 403,
                 "fallback: a shell task needs the admin role"),
                # Owner rule: a saved schedule is its author's to change, or an admin's.
                ("PUT", "/api/v1/schedules/ping", other_operator, ping, 403, "not yours"),
                ("DELETE", "/api/v1/schedules/ping", other_operator, None, 403, "not yours"),
                ("POST", "/api/v1/schedules", viewer, {**ping, "name": "v"}, 403, "operator"),
                ("POST", "/api/v1/schedules", admin, {**ping, "name": "log_monitor"}, 409, "read-only"),
                ("PUT", "/api/v1/schedules/log_monitor", admin, {**ping, "name": "log_monitor"}, 409, "read-only"),
                ("DELETE", "/api/v1/schedules/log_monitor", admin, None, 409, "read-only"),
                ("PUT", "/api/v1/schedules/nothing", admin, {**ping, "name": "nothing"}, 404, "no schedule"),
                ("PUT", "/api/v1/schedules/ping", admin, {**ping, "name": "other"}, 400, "differs"),
                ("DELETE", "/api/v1/schedules/ping", viewer, None, 403, "operator"),
            ]
            for method, path, who, body, code, words in refused:
                status, reply = await call(method, path, who, body)
                assert status == code and words in reply["error"]["message"], (method, path, body, reply)

            status, inline = await call("POST", "/api/v1/schedules", admin, {**ping, "name": "lm2", "enabled": False,
                                                                            "action": "python check_logs.py"})
            assert status == 201 and inline["schedule"]["run_as"] == "admin"
            assert (await call("DELETE", "/api/v1/schedules/ping", operator))[0] == 200
            assert (await call("GET", "/api/v1/schedules/ping", viewer))[0] == 404
            assert (await call("DELETE", "/api/v1/schedules/ping", operator))[0] == 404
            names = [item["schedule"]["name"] for item in (await call("GET", "/api/v1/schedules", viewer))[1]["items"]]
            assert names == ["lm2", "log_monitor"]
    finally:
        agent.terminate()
        agent.wait(15)
    assert "running 2 schedules (1 from the file)" in (tmp_path / "agent.log").read_text()


async def test_hostile_schedule_bodies_are_refused_by_name(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers, max_body_bytes=64 * 1024) as (client, dispatcher):
        admin = bearer(dispatcher, Role.ADMIN)
        good = {"name": "s", "trigger": "interval:5m", "action": "heartbeat"}
        cases: list[tuple[Any, str]] = [
            ({}, "name"),
            ({**good, "trigger": "cron:* *"}, "trigger"),
            ({**good, "trigger": "cron:61 * * * *"}, "trigger"),
            ({**good, "trigger": "interval:0.1"}, "trigger"),
            ({**good, "trigger": "at:tomorrow"}, "trigger"),
            ({**good, "trigger": "mqtt:devices/#/x"}, "trigger"),
            ({**good, "trigger": "sometimes"}, "trigger"),
            ({**good, "timezone": "../../etc/passwd"}, "timezone"),
            ({**good, "action": "python 'unclosed"}, "action"),
            ({**good, "action": "ls\x00-la"}, "action"),
            ({**good, "action": "   "}, "action"),
            ({**good, "fallback": "x" * 5000}, "fallback"),
            ({**good, "run_as": "admin"}, "run_as"),
            ({**good, "name": "../etc"}, "name"),
            ({**good, "name": "x" * 65}, "name"),
            ({**good, "retries": 10**6}, "retries"),
            ({**good, "concurrency": "all-at-once"}, "concurrency"),
            (["name", "s"], "body"),
            (b'{"name": "s", "trigger": "interval:5m", "action": "heartbeat", "timeout_s": 1e309}', "timeout_s"),
            (b'{"name": "s", "trigger": ', "JSON"),
        ]
        for body, named in cases:
            raw = {"data": body} if isinstance(body, bytes) else {"json": body}
            reply = await client.post("/api/v1/schedules", headers=admin, **raw)
            assert reply.status == 400, (body, reply.status)
            error = (await reply.json())["error"]
            assert named in error["message"] or named in (error.get("field") or ""), (body, error)
        too_big = await client.post("/api/v1/schedules", headers=admin, json={**good, "args": {"x": "y" * 100_000}})
        assert too_big.status == 413
        for path in ("/api/v1/schedules/a%2Fb", "/api/v1/schedules/..", "/api/v1/schedules/" + "x" * 100):
            assert (await client.get(path, headers=admin)).status in (400, 404), path
        listed = await (await client.get("/api/v1/schedules", headers=admin)).json()
        assert listed["items"] == []


async def test_every_field_at_fault_is_listed_for_the_form(config_file: Path, services: StartServices) -> None:
    """A form marks each wrong field, not only the first: the error lists them all in ``problems``."""
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        body = {"name": "bad name!", "trigger": "cron:* * *", "action": "heartbeat", "timezone": "Mars/Base",
                "retries": 99}
        reply = await client.post("/api/v1/schedules", headers=bearer(dispatcher, Role.OPERATOR), json=body)
        error = (await reply.json())["error"]
        assert reply.status == 400 and error["field"] == "name", error
        by_field = {problem["field"]: problem["message"] for problem in error["problems"]}
        assert set(by_field) == {"name", "trigger", "timezone", "retries"}, by_field
        assert "five fields" in by_field["trigger"] and "unknown timezone 'Mars/Base'" in by_field["timezone"]
        assert "got 99" in by_field["retries"] and not by_field["trigger"].startswith("Value error")


# What each schedules command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_SCHEDULES = {
    'schedules.list': ('read', 'viewer', None, 'list_schedules'),
    'schedules.get': ('read', 'viewer', None, None),
    'schedules.create': ('write', 'operator', None, 'create_schedule'),
    'schedules.replace': ('write', 'operator', 'OwnRow', None),
    'schedules.delete': ('write', 'operator', 'OwnRow', None),
}


def test_the_schedules_commands_are_declared_as_decided() -> None:
    assert declarations('schedules') == DECLARED_SCHEDULES
