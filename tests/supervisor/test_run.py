"""`appliance run` end to end: five real processes, a real broker, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from appliance.config import load_config
from tests.helpers import eventually, write_config

pytestmark = pytest.mark.slow


def post_health(port: int, token: str) -> dict[str, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/health", method="POST",
                                     data=json.dumps({"token": token}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)  # type: ignore[no-any-return]


@pytest.fixture
def appliance(config_file: Path, mosquitto: int) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"]["port"] = mosquitto
    write_config(config_file, data)
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "run"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield process, config_file
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_all_five_ready_events_flow_and_crashes_heal(appliance: tuple[subprocess.Popen[str], Path],
                                                      mosquitto: int) -> None:
    process, config_file = appliance
    config = load_config(config_file)
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert "all 5 services ready" in banner and f"http://127.0.0.1:{config.api.port}/" in banner

    token = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config_file), "token", "create",
                            "--role", "admin"], capture_output=True, text=True, check=True).stdout.split()[-1]
    report = post_health(config.api.port, token)
    assert report["status"] == "ready", report
    assert [s["name"] for s in report["services"]] == ["store", "engine", "mqtt", "agent", "api"]  # type: ignore[union-attr,index]

    # Device events reach the store through the broker; hostile ones are refused, not fatal.
    publish = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto), "-t"]
    subprocess.run([*publish, "devices/bad/events", "-m", "x" * 70_000], check=True)
    subprocess.run([*publish, "devices/door-7/events", "-m", '{"open": true}'], check=True)
    store = config.socket_path("store")
    get = ["curl", "-s", "--unix-socket", str(store), "-X", "POST", "http://store/v1/get", "-d", '{"id": 1}']
    eventually(lambda: '"source":"door-7"' in subprocess.run(get, capture_output=True, text=True).stdout,
               10, "the event in the store")
    eventually(lambda: "1 quarantined" in json.dumps(post_health(config.api.port, token)), 10, "the rejection counted")

    # A crashed child is restarted and the whole appliance is ready again.
    before = child_pids(process.pid)
    os.kill(before[1], signal.SIGKILL)  # the engine
    eventually(lambda: len(set(child_pids(process.pid)) - set(before)) == 1
               and post_health(config.api.port, token)["status"] == "ready", 30, "the engine restarted")

    # SIGTERM stops everything, children first, within the grace period.
    children = child_pids(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_broker_down_is_degraded_not_dead(config_file: Path) -> None:
    """No broker listens on the configured port: mqtt stays up and says why."""
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "run"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert "all 5 services ready" in process.stdout.readline()
        config = load_config(config_file)
        status = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config_file), "status"],
                                capture_output=True, text=True)
        assert status.returncode == 1
        mqtt_line = next(line for line in status.stdout.splitlines() if line.startswith("mqtt"))
        assert "degraded" in mqtt_line and f"cannot reach 127.0.0.1:{config.mqtt.port}" in mqtt_line
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
