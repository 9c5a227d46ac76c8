"""The bridge against a broker that wants a password, and one that wants TLS with client certificates."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.devices import STORE_DEVICES, DeviceQuery
from tests.helpers import (
    Publisher,
    eventually_async,
    issue_certificates,
    serve,
    start_mosquitto,
    wait_ready,
    write_config,
)

pytestmark = pytest.mark.slow


def point_at(config_file: Path, port: int, **mqtt: Any) -> None:
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"].update(port=port, **mqtt)
    write_config(config_file, data)


async def health_says(peers: Peers, state: ServiceState, words: str) -> bool:
    try:
        health = await peers.mqtt.call(HEALTH, timeout_s=1.0)
    except IpcError:
        return False
    return health.state is state and words in health.detail


async def device_seen(peers: Peers, device: str) -> bool:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(prefix=device))
    return bool(page.items)


@pytest.fixture
def passwords(tmp_path: Path) -> Path:
    """A mosquitto password file with two users, written by mosquitto_passwd."""
    path = tmp_path / "passwords"
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for user, password in (("appliance", "s3cret pass"), ("sensor", "sensor-pass")):
        subprocess.run([tool, "-b", *(["-c"] if not path.exists() else []), str(path), user, password], check=True)
    return path


async def test_username_and_password(config_file: Path, tmp_path: Path, passwords: Path,
                                     services: Callable[..., Awaitable[Peers]]) -> None:
    broker, port = start_mosquitto(tmp_path / "broker", f"password_file {passwords}", "allow_anonymous false")
    try:
        point_at(config_file, port, username="appliance", password="wrong")
        peers = await services("store")
        bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
        try:
            await eventually_async(lambda: health_says(peers, ServiceState.DEGRADED, "refused"), 30,
                                   "a refusal named in health")
        finally:
            bridge.terminate()
            bridge.wait(10)
        point_at(config_file, port, username="appliance", password="s3cret pass")
        bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
        try:
            await wait_ready(peers.mqtt)
            device = Publisher(port, "sensor", username="sensor", password="sensor-pass")
            device.publish("devices/locked-1/events", json.dumps({"value": 1}))
            device.close()
            await eventually_async(lambda: device_seen(peers, "locked-1"), 15, "the event, authenticated")
        finally:
            bridge.terminate()
            bridge.wait(10)
    finally:
        broker.terminate()
        broker.wait(5)


async def test_tls_with_a_client_certificate(config_file: Path, tmp_path: Path,
                                             services: Callable[..., Awaitable[Peers]]) -> None:
    certs = issue_certificates(tmp_path / "pki", "broker", "appliance")
    broker, port = start_mosquitto(tmp_path / "broker", f"cafile {certs['ca']}", f"certfile {certs['broker.crt']}",
                                   f"keyfile {certs['broker.key']}", "require_certificate true")
    try:
        peers = await services("store")
        # Verifying the broker but presenting no certificate: the broker refuses the handshake.
        point_at(config_file, port, tls={"enabled": True, "ca_file": str(certs["ca"])})
        bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
        try:
            await eventually_async(lambda: health_says(peers, ServiceState.DEGRADED, f"127.0.0.1:{port}"), 30,
                                   "a TLS failure named in health")
        finally:
            bridge.terminate()
            bridge.wait(10)
        point_at(config_file, port, tls={"enabled": True, "ca_file": str(certs["ca"]),
                                         "cert_file": str(certs["appliance.crt"]),
                                         "key_file": str(certs["appliance.key"])})
        bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
        try:
            await wait_ready(peers.mqtt)
            device = Publisher(port, "sensor", ca_file=certs["ca"], cert_file=str(certs["appliance.crt"]),
                               key_file=str(certs["appliance.key"]))
            device.publish("devices/tls-1/events", json.dumps({"value": 1}))
            device.close()
            await eventually_async(lambda: device_seen(peers, "tls-1"), 15, "the event through TLS")
        finally:
            bridge.terminate()
            bridge.wait(10)
    finally:
        broker.terminate()
        broker.wait(5)
