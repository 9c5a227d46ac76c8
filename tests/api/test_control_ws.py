"""WebSocket /control against the real app, command table and store (and, for tasks, a real agent):
authentication before anything, the Origin check, limits, attacks, commands, tasks followed and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp.test_utils import TestClient

from appliance.api.control_frames import frame_schemas
from appliance.config import WebSocketConfig, load_config
from appliance.control.caller import Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from appliance.protocol.devices import STORE_AVAILABILITY, Availability
from tests.helpers import api_client, bearer, serve

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]


SCHEMAS = {schema["properties"]["type"]["const"]: schema for schema in frame_schemas()["server"].values()}


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 30.0) -> dict[str, Any]:
    """The next frame, checked against the published JSON schema of its type."""
    message = await ws.receive(timeout=timeout_s)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    frame: dict[str, Any] = json.loads(message.data)
    jsonschema.validate(frame, SCHEMAS[frame["type"]])
    return frame


async def until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    frames = [await receive(ws)]
    while not done(frames[-1]):
        frames.append(await receive(ws))
    return frames


async def connect(client: TestClient, headers: dict[str, str]) -> aiohttp.ClientWebSocketResponse:  # type: ignore[type-arg]
    ws = await client.ws_connect("/control", headers=headers)
    ready = await receive(ws)
    assert ready["type"] == "ready", ready
    return ws


async def test_authentication_comes_first(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    limits = WebSocketConfig(auth_timeout_s=0.5)
    async with api_client(load_config(config_file), peers, websocket=limits) as (client, dispatcher):
        viewer = bearer(dispatcher, Role.VIEWER)
        silent = await client.ws_connect("/control")  # says nothing: closed once the wait is over
        message = await silent.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401 and "no auth frame" in message.extra
        for first in ('{"command": "system.health"}', "not json", '{"type": "auth", "token": "forged.jwt.x"}'):
            ws = await client.ws_connect("/control?token=" + viewer["Authorization"][7:])  # a URL token is ignored
            await ws.send_str(first)
            message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401, (first, message)
        browser = await client.ws_connect("/control", headers={"Origin": f"http://{client.host}:{client.port}"})
        await browser.send_json({"type": "auth", "token": viewer["Authorization"][7:]})
        ready = await receive(browser)
        assert (ready["type"], ready["role"], ready["user"]) == ("ready", "viewer", "alice")
        bad = await client.get("/control", headers={"Authorization": "Bearer forged", "Upgrade": "websocket",
                                                    "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert bad.status == 401  # a bad header token is refused before the upgrade

        short = bearer(dispatcher, Role.VIEWER, ttl_s=2)
        ws = await connect(client, short)
        message = await ws.receive(timeout=15)
        while message.type is aiohttp.WSMsgType.TEXT:
            message = await ws.receive(timeout=15)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401 and "expired" in message.extra


async def test_a_foreign_origin_is_refused_before_the_upgrade(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers, allowed_origins=["https://app.example"]) as (client, d):
        admin = bearer(d, Role.ADMIN)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/control", headers={**admin, "Origin": "https://evil.example"})
        assert refused.value.status == 403
        for allowed in ({}, {"Origin": "https://app.example"}, {"Origin": f"http://{client.host}:{client.port}"}):
            ws = await connect(client, {**admin, **allowed})
            await ws.close()


async def test_bad_frames_get_errors_and_the_socket_stays(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers, websocket=WebSocketConfig(max_frame_bytes=4096)) as (
            client, dispatcher):
        ws = await connect(client, bearer(dispatcher, Role.VIEWER))
        cases: list[tuple[str | bytes, str, str]] = [
            ("{oops", "bad_request", "not JSON"),
            ("[1, 2]", "bad_request", "JSON object"),
            (b"\x00\x01", "bad_request", "binary"),
            ('{"id": 1, "command": "no.such"}', "not_found", "no command"),
            ('{"id": 2, "command": "tasks.approve", "args": {"id": 1}}', "forbidden", "operator"),
            ('{"id": 3, "command": "notify", "message": "x"}', "forbidden", "operator"),
            ('{"id": 4, "command": "memory.search", "args": {"q": "x", "k": -5}}', "bad_request", "k"),
            ('{"id": 5, "command": "system.health", "args": [1]}', "bad_request", "args"),
            ('{"id": {"x": 1}, "command": "system.health"}', "bad_request", "id"),
            ('{"id": 6, "type": "explode"}', "bad_request", "type"),
            ('{"id": 7, "type": "resume", "task": "1; DROP TABLE tasks"}', "bad_request", "task"),
            ('{"id": 8, "type": "subscribe", "topics": [{"x": 1}]}', "bad_request", "topics"),
            ('{"id": 9, "type": "subscribe", "topics": "services"}', "bad_request", "topics"),
        ]
        for frame, code, words in cases:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            reply = await receive(ws)
            assert reply["type"] == "error" and reply["code"] == code and words in reply["message"] + str(
                reply.get("field")), (frame, reply)
        await ws.send_json({"id": "h", "command": "system.health"})
        health = await receive(ws)
        assert (health["id"], health["type"]) == ("h", "result") and "services" in health["content"]
        tasks = await (await client.get("/api/v1/tasks", headers=bearer(dispatcher, Role.ADMIN))).json()
        assert tasks["items"] == []  # the refused notify did nothing
        await ws.send_str(json.dumps({"command": "system.health", "pad": "x" * 5000}))
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_an_error_frame_that_cannot_be_made_still_answers_the_request(
        config_file: Path, services: StartServices, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault of ours in the error path (here: a field the frame does not declare) is answered as
    internal, never left unanswered: the client would wait for ever."""
    peers = await services("store")
    declared = CommandError.as_dict
    monkeypatch.setattr(CommandError, "as_dict", lambda self: {**declared(self), "undeclared": 1})
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        ws = await connect(client, bearer(dispatcher, Role.VIEWER))
        await ws.send_json({"id": 1, "command": "no.such"})
        reply = await receive(ws)
        assert (reply["type"], reply["id"], reply["code"]) == ("error", 1, "internal"), reply
        await ws.send_json({"id": "h", "command": "system.health"})
        assert (await receive(ws))["type"] == "result"  # the socket lives on


async def test_a_flooding_client_is_throttled_and_others_are_not(config_file: Path,
                                                                 services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        flood = await connect(client, bearer(dispatcher, Role.VIEWER))
        calm = await connect(client, bearer(dispatcher, Role.VIEWER))
        for n in range(10_000):
            await flood.send_str(f'{{"id": {n}, "type": "ping"}}')
        pongs = busy = 0
        with contextlib.suppress(TimeoutError):
            while True:  # everything the server answers, until it has been quiet for 2 s
                frame = await receive(flood, timeout_s=2.0)
                pongs += frame["type"] == "pong"
                busy += frame.get("code") == "busy"
        assert busy >= 1 and 40 <= pongs < 1000  # the burst and the sustained rate: not the flood
        for n in range(10):
            await calm.send_json({"id": n, "type": "ping"})
            assert (await receive(calm)) == {"id": n, "type": "pong"}


async def test_tasks_are_followed_and_resumed_exactly(tmp_path: Path, config_file: Path,
                                                      services: StartServices) -> None:
    peers = await services("store")
    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            admin, other = bearer(dispatcher, Role.ADMIN, "ada"), bearer(dispatcher, Role.VIEWER, "bob")
            ws = await connect(client, admin)
            await ws.send_json({"id": "t1", "command": "shell", "argv": ["sh", "-c", "sleep 1; echo done"]})
            created = await receive(ws)
            assert created["type"] == "task" and created["id"] == "t1"
            task = created["task"]
            seen = [await receive(ws), await receive(ws)]  # queued, running: then the phone loses its signal
            await ws.close()

            ws = await connect(client, admin)
            await ws.send_json({"id": "r", "type": "resume", "task": task, "after": seen[-1]["seq"]})
            rest = await until(ws, lambda frame: frame["type"] in ("result", "error"))
            frames = seen + rest
            assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))  # no gap, no duplicate
            assert rest[-1]["type"] == "result" and rest[-1]["content"]["exit_code"] == 0
            steps = (await (await client.get(f"/api/v1/tasks/{task}", headers=admin)).json())["steps"]
            assert [step["message"] for step in steps][:2] == [frame["message"] for frame in seen]
            assert len(steps) == len(frames)

            await ws.send_json({"id": "again", "type": "resume", "task": task, "after": 0})
            replay = await until(ws, lambda frame: frame["type"] in ("result", "error"))
            assert [frame["seq"] for frame in replay] == [frame["seq"] for frame in frames]

            thief = await connect(client, other)
            await thief.send_json({"id": "x", "type": "resume", "task": task, "after": 0})
            refused = await receive(thief)
            # A viewer reads only their own tasks' logs; the refusal names the frame's field, as everywhere.
            assert (refused["type"], refused["code"], refused["field"]) == ("error", "forbidden", "task")
            assert "not yours" in refused["message"]
    finally:
        agent.terminate()
        agent.wait(15)


async def test_streaming_commands_stream(config_file: Path, services: StartServices) -> None:
    peers = await services("store", "engine")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        ws = await connect(client, bearer(dispatcher, Role.VIEWER))
        await ws.send_json({"id": 1, "command": "chat", "args": {"message": "hello", "max_tokens": 8,
                                                                 "use_memory": False}})
        frames = await until(ws, lambda frame: frame["type"] in ("result", "error"))
        assert [f["type"] for f in frames].count("token") >= 1 and frames[-1]["type"] == "result", frames
        assert all(frame["id"] == 1 for frame in frames)
        await asyncio.sleep(0)


async def test_a_client_that_does_not_read_is_dropped(config_file: Path, services: StartServices) -> None:
    """Replies of ~300 KB that the client never reads: once the socket buffers are full the send
    queue fills, and the server closes the connection (1013) instead of holding more."""
    peers = await services("store")
    limits = WebSocketConfig(send_queue=16, frames_per_s=10_000, burst=10_000, max_inflight=1000)
    async with api_client(load_config(config_file), peers, websocket=limits) as (client, dispatcher):
        admin = bearer(dispatcher, Role.ADMIN)
        for n in range(10):
            reply = await client.post("/api/v1/memory", headers=admin, json={
                "text": f"dock door report {n} " + "x" * 30_000, "kind": "fact"})
            assert reply.status == 201, await reply.text()
        ws = await connect(client, admin)
        for n in range(200):  # ~60 MB of replies, far past what the socket buffers hold
            await ws.send_json({"id": n, "command": "memory.search", "args": {"q": "dock door", "k": 10,
                                                                                  "mode": "text"}})
        closed = None
        while closed is None:
            message = await ws.receive(timeout=60)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                closed = message
        assert closed.data == 1013 and "too slow" in closed.extra


async def test_subscriptions_deliver_snapshots_then_changes(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        admin = bearer(dispatcher, Role.ADMIN, "ada")
        viewer = await connect(client, bearer(dispatcher, Role.VIEWER))
        await viewer.send_json({"id": 1, "type": "subscribe", "topics": ["audit"]})
        refused = await receive(viewer)
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        await viewer.send_json({"id": 2, "type": "subscribe", "topics": ["weather"]})
        assert (await receive(viewer))["code"] == "bad_request"
        await viewer.send_json({"id": 3, "type": "subscribe", "topics": ["services", "tasks", "metrics"]})
        assert (await receive(viewer)) == {"id": 3, "type": "subscribed", "topics": ["metrics", "services", "tasks"]}
        first = {}
        while len(first) < 3:
            frame = await receive(viewer)
            first.setdefault(frame["topic"], frame)
        assert all(frame["snapshot"] for frame in first.values())
        states = {row["name"]: row["state"] for row in first["services"]["content"]["services"]}
        assert states["store"] == "ready" and states["engine"] == "down"  # only the store runs here

        watcher = await connect(client, admin)
        await watcher.send_json({"id": "a", "type": "subscribe", "topics": ["audit", "tasks"]})
        assert (await receive(watcher))["type"] == "subscribed"
        made = await client.post("/api/v1/tasks", headers=admin, json={"kind": "ask", "query": "gate?"})
        task = (await made.json())["id"]

        def task_event(frame: dict[str, Any]) -> bool:
            return frame.get("topic") == "tasks" and any(row["id"] == task for row in frame["content"]["items"])

        await until(viewer, task_event)
        audited = await until(watcher, lambda f: f.get("topic") == "audit" and any(
            row["action"] == "tasks.create" for row in f["content"]["items"]))
        assert audited[-1]["type"] == "event"
        await viewer.send_json({"id": 4, "type": "unsubscribe", "topics": ["metrics", "tasks"]})
        reply = await until(viewer, lambda f: f["type"] == "subscribed")
        assert reply[-1]["topics"] == ["services"]


async def test_broadcast_messages_reach_subscribed_sockets(config_file: Path, services: StartServices) -> None:
    """Through the real api process: messages.broadcast goes over its IPC endpoint to the hub."""
    config = load_config(config_file)
    peers = await services("store", "api")
    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    url = f"http://127.0.0.1:{config.api.port}/control"
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(url, headers=bearer(dispatcher, Role.VIEWER, "vic"))
        sender = await session.ws_connect(url, headers=bearer(dispatcher, Role.OPERATOR, "olga"))
        for ws in (listener, sender):
            assert (await receive(ws))["type"] == "ready"
        await listener.send_json({"id": 1, "type": "subscribe", "topics": ["messages"]})
        assert (await receive(listener))["type"] == "subscribed"
        await sender.send_json({"id": 2, "command": "messages.broadcast", "args": {
            "kind": "alert", "text": "北门开着 / the north gate is open", "sender": "spoofed"}})
        assert (await receive(sender))["content"] == {"changed": 1}  # one socket subscribed
        event = await receive(listener)
        assert event["topic"] == "messages" and event["content"]["text"] == "北门开着 / the north gate is open"
        assert event["content"]["sender"] == "olga" and event["content"]["kind"] == "alert"  # never the body's claim
        await listener.send_json({"id": 3, "command": "messages.broadcast", "args": {"text": "x"}})
        assert (await receive(listener))["code"] == "forbidden"  # a viewer may listen, not broadcast


async def test_a_revoked_token_closes_its_socket(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        dispatcher.accounts.start_following()  # as the api service does
        admin = bearer(dispatcher, Role.ADMIN)
        issued = await (await client.post("/api/v1/tokens", headers=admin, json={
            "name": "phone-7", "role": "viewer"})).json()
        ws = await connect(client, {"Authorization": f"Bearer {issued['token']}"})
        revoked = await client.delete(f"/api/v1/tokens/{issued['jti']}", headers=admin)
        assert revoked.status == 200, await revoked.text()
        message = await ws.receive(timeout=15)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401 and "revoked" in message.extra
        await dispatcher.accounts.stop()


async def test_device_changes_are_events(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        ws = await connect(client, bearer(dispatcher, Role.VIEWER))
        await ws.send_json({"id": 1, "type": "subscribe", "topics": ["devices"]})
        assert (await receive(ws))["type"] == "subscribed"
        snapshot = await receive(ws)
        assert snapshot["snapshot"] and snapshot["content"]["items"] == []
        await peers.store.call(STORE_AVAILABILITY, Availability(device="door-1", online=True, at=time.time()))
        [change] = (await until(ws, lambda f: f.get("topic") == "devices" and f["content"]["items"]))[-1:]
        [row] = change["content"]["items"]
        assert (row["device_id"], row["online"], change["snapshot"]) == ("door-1", True, False)
        await peers.store.call(STORE_AVAILABILITY, Availability(device="door-1", online=False, at=time.time()))
        [again] = (await until(ws, lambda f: f.get("topic") == "devices"))[-1:]
        assert again["content"]["items"][0]["online"] is False


async def test_a_fresh_token_keeps_the_socket_and_what_it_follows(config_file: Path, services: StartServices) -> None:
    """The admin page refreshes its session every few minutes: the new token is sent as an auth frame
    and the socket lives on past the old token's expiry, subscriptions intact; a token of someone
    else cannot take the socket over."""
    peers = await services("store")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        ws = await connect(client, bearer(dispatcher, Role.VIEWER, "vic", ttl_s=3))
        await ws.send_json({"id": 1, "type": "subscribe", "topics": ["status"]})
        assert (await receive(ws))["topics"] == ["status"]
        snapshot = await until(ws, lambda f: f.get("topic") == "status")
        content = snapshot[-1]["content"]
        assert snapshot[-1]["snapshot"] and content["resources"]["cores"] >= 1
        assert {row["name"] for row in content["health"]["services"]} >= {"store", "engine", "api"}

        for token, code in ((bearer(dispatcher, Role.ADMIN, "vic")["Authorization"][7:], "forbidden"),
                            (bearer(dispatcher, Role.VIEWER, "mallory")["Authorization"][7:], "forbidden"),
                            ("forged.jwt.x", "unauthorized"), (42, "bad_request")):
            await ws.send_json({"id": "bad", "type": "auth", "token": token})
            refused = await until(ws, lambda f: f.get("id") == "bad")
            assert (refused[-1]["type"], refused[-1]["code"]) == ("error", code), refused[-1]
        await ws.send_json({"id": "fresh", "type": "auth", "token": bearer(dispatcher, Role.VIEWER, "vic")[
            "Authorization"][7:]})
        ready = (await until(ws, lambda f: f.get("id") == "fresh"))[-1]
        assert ready["type"] == "ready" and ready["expires_at"] > time.time() + 500
        await asyncio.sleep(4)  # past the first token's expiry
        await ws.send_json({"id": "still", "type": "subscribe", "topics": ["services"]})
        reply = (await until(ws, lambda f: f.get("id") == "still"))[-1]
        assert reply == {"id": "still", "type": "subscribed", "topics": ["services", "status"]}
