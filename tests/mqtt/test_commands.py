"""Commands to devices through the whole path: REST -> dispatcher -> mqtt service -> a real broker -> a device.

The devices are paho-mqtt clients in this process that answer like real firmware would: an
MQTT 5 device echoes the correlation data as a property, a 3.1.1 device puts the correlation
id in its answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.store import STORE_AUDIT_LIST, AuditQuery
from tests.helpers import Publisher, Valve, api_client, bearer, eventually_async, serve

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mqtt311", [False, True], ids=["mqtt5", "mqtt3.1.1"])
async def test_a_command_is_answered_and_audited(config_file: Path, broker: int, mqtt311: bool,
                                                 services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store", "mqtt")
    valve = Valve(broker, "valve-3", mqtt311=mqtt311)
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            response = await client.post("/api/v1/devices/valve-3/commands",
                                         json={"command": "set", "args": {"position": 40}, "wait_s": 10},
                                         headers=bearer(dispatcher, Role.OPERATOR, "olga"))
            result = await response.json()
            assert response.status == 200, result
            assert result["status"] == "answered" and result["response"]["position"] == 40
            assert result["topic"] == "devices/valve-3/commands" and result["latency_ms"] > 0
            sent = valve.commands[0]
            assert sent["command"] == "set" and sent["correlation_id"] == result["correlation_id"]
            assert sent["response_topic"].startswith("appliance/")
            audit = await peers.store.call(STORE_AUDIT_LIST, AuditQuery(action="devices.command"))
            row = audit.items[0]
            assert row.user_id == "olga" and row.details["ok"] is True and row.details["via"] == "rest"
            assert row.details["device_id"] == "valve-3" and row.details["status"] == "answered"
    finally:
        valve.close()


async def test_silence_times_out_and_a_late_answer_is_dropped(config_file: Path, broker: int,
                                                              services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store", "mqtt")
    listener = Publisher(broker, "listener")
    listener.subscribe("devices/mute/commands")
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            headers = bearer(dispatcher, Role.OPERATOR)
            response = await client.post("/api/v1/devices/mute/commands", json={"command": "ping", "wait_s": 0.5},
                                         headers=headers)
            result = await response.json()
            assert response.status == 200 and result["status"] == "timed_out", result
            assert listener.received, "the command was published even though nobody answered"
            # An answer after the timeout (or for no command at all) goes nowhere and breaks nothing.
            listener.publish(json.loads(listener.received[0].payload)["response_topic"],
                             json.dumps({"correlation_id": result["correlation_id"], "late": True}))
            response = await client.post("/api/v1/devices/mute/commands", json={"command": "ping", "wait_s": 0},
                                         headers=headers)
            assert (await response.json())["status"] == "delivered"
    finally:
        listener.close()


async def test_commands_are_refused_with_reasons(config_file: Path, broker: int,
                                                 services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store", "mqtt")
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        operator, viewer = bearer(dispatcher, Role.OPERATOR), bearer(dispatcher, Role.VIEWER)
        cases: list[tuple[str, Any, dict[str, str], int, str]] = [
            ("valve-1", {"command": "open"}, viewer, 403, "operator"),
            ("valve-1", {"command": "open; rm -rf /"}, operator, 400, "command"),
            ("valve-1", {"command": "open", "wait_s": 1e9}, operator, 400, "wait_s"),
            ("valve-1", {"command": "open", "args": [1, 2]}, operator, 400, "args"),
            ("valve-1", {"command": "open", "topic": "devices/#"}, operator, 400, "topic"),
            ("a%2Fb", {"command": "open"}, operator, 400, "device_id"),
            ("%2B", {"command": "open"}, operator, 400, "device_id"),
            ("x" * 200, {"command": "open"}, operator, 400, "device_id"),
        ]
        for device, body, headers, status, words in cases:
            response = await client.post(f"/api/v1/devices/{device}/commands", json=body, headers=headers)
            text = await response.text()
            assert response.status == status and words in text, (device, body, response.status, text)
        huge = {"command": "open", "args": {"blob": "x" * 2_000_000}}
        response = await client.post("/api/v1/devices/valve-1/commands", json=huge, headers=operator)
        assert response.status == 413


async def test_no_broker_means_unavailable_not_a_hang(config_file: Path, tmp_path: Path,
                                                      services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")  # nobody listens on the config's broker port
    await eventually_async(lambda: _degraded(peers), 30, "the bridge to say it is degraded")
    try:
        await _command_while_the_broker_is_down(config_file, peers)
    finally:
        bridge.terminate()
        bridge.wait(10)


async def _degraded(peers: Peers) -> bool:
    try:
        return (await peers.mqtt.call(HEALTH, timeout_s=1.0)).state is ServiceState.DEGRADED
    except IpcError:
        return False


async def _command_while_the_broker_is_down(config_file: Path, peers: Peers) -> None:
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        response = await client.post("/api/v1/devices/valve-1/commands", json={"command": "open"},
                                     headers=bearer(dispatcher, Role.OPERATOR))
        body = await response.json()
        assert response.status == 503 and "broker" in body["error"]["message"], body
        audit = await peers.store.call(STORE_AUDIT_LIST, AuditQuery(action="devices.command"))
        assert audit.items[0].details["ok"] is False and audit.items[0].details["error"] == "unavailable"


async def test_the_cli_sends_the_same_command(config_file: Path, broker: int,
                                              services: Callable[..., Awaitable[Peers]]) -> None:
    """`appliance devices command` is the same command: answered, and audited as the console's."""
    peers = await services("store", "mqtt")
    valve = Valve(broker, "valve-9")
    try:
        done = await _cli(config_file, "devices", "command", "valve-9", "set", "--args", '{"position": 7}',
                          "--wait", "10")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "answered" and result["response"]["position"] == 7
        audit = await peers.store.call(STORE_AUDIT_LIST, AuditQuery(action="devices.command"))
        assert audit.items[0].details["via"] == "cli" and audit.items[0].details["status"] == "answered"
        for bad, words in ((["valve-9", "set", "--args", "[1]"], "JSON object"),
                           (["valve-9", "set", "--args", "{"], "not JSON"),
                           (["valve/9", "set"], "device_id"), (["valve-9", "rm -rf"], "command")):
            refused = await _cli(config_file, "devices", "command", *bad)
            assert refused.returncode == 2 and words in refused.stderr, (bad, refused.stderr)
    finally:
        valve.close()


async def _cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance", "--config", str(config_file),
                                                   *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())
