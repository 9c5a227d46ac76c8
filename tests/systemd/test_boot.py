"""The appliance under real systemd 252 as PID 1, in a throwaway overlay container.

Only root can make the namespaces, so the test skips (saying so) for anyone else. The
container's writes all go to a tmpfs; see container.py for the recipe and the install.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, write_config
from tests.systemd.container import Container, python_is_debian_311

SERVICES = ("store", "engine", "mqtt", "agent", "api")

pytestmark = pytest.mark.slow


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "booting systemd in a pid+mount namespace needs root"
    if not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed"
    if not python_is_debian_311():
        return "/usr/bin/python3 must be the same CPython minor version as the venv"
    return None


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    if reason := missing_prerequisite():
        if os.environ.get("APPLIANCE_REQUIRE_SYSTEMD_TEST"):
            pytest.fail(f"the systemd test is required here but cannot run: {reason}")
        pytest.skip(reason)


def wait_until(predicate, timeout_s: float, what: str, container: Container) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    logs = "\n".join(container.journal(f"appliance-{s}")[-3000:] for s in [*SERVICES, "sandbox@*"])
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")


def active_running(container: Container, service: str) -> bool:
    unit = f"appliance-{service}.service"
    return (container.show(unit, "ActiveState"), container.show(unit, "SubState")) == ("active", "running")


@pytest.fixture
def container(tmp_path: Path, models: dict[str, Path], mosquitto: int) -> Iterator[tuple[Container, int]]:
    stage = tmp_path / "stage"
    stage.mkdir()
    for kind, path in models.items():
        (stage / f"{kind}.gguf").write_bytes(path.read_bytes())
    (stage / "appliance-test-boot.target").write_bytes(
        (Path(__file__).parent / "appliance-test-boot.target").read_bytes())
    api_port = free_port()
    write_config(stage / "agent.yaml", {
        "engine": {"chat_model": "/opt/appliance/models/chat.gguf",
                   "embedding_encoder": "gguf",
                   "embedding_model": "/opt/appliance/models/embedding.gguf", "n_ctx": 512, "n_threads": 1},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto},
        "api": {"host": "127.0.0.1", "port": api_port},
        "agent": {"heartbeat_interval_s": 1},
    })
    base = tmp_path / "boot"
    base.mkdir()
    box = Container(base, stage)
    try:
        box.boot()
        yield box, api_port
    finally:
        # PID 1 of a pid namespace that powers off is ended by SIGINT: the clean signature.
        status = box.poweroff()
        assert status == -2, f"container did not power off cleanly (status {status})"


def test_appliance_target_under_systemd(container: tuple[Container, int]) -> None:
    box, api_port = container
    wait_until(lambda: all(active_running(box, s) for s in SERVICES), 90, "all five active (running)", box)

    # All five report ready through the real control plane.
    def all_ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=3) as reply:
                return json.load(reply)["status"] == "ready"
        except OSError:
            return False

    wait_until(all_ready, 30, "GET /api/v1/health to say ready", box)

    # A sandboxed command under the shipped units: the agent hands it to the root helper
    # (appliance-sandbox.socket -> appliance-sandbox@.service), which drops to uid 65534.
    console = ("/opt/appliance/bin/appliance", "--config", "/etc/appliance/agent.yaml", "tasks")
    script = "id -u; cat /etc/appliance/agent.yaml || echo no-config; echo ok > /work/x && echo wrote"
    made = json.loads(box.run(*console, "create", "--kind", "shell", "--", "sh", "-c", script).stdout)
    detail: dict[str, Any] = {}

    def settled(task_id: int) -> bool:
        detail.clear()
        detail.update(json.loads(box.run(*console, "show", str(task_id), check=False).stdout or "{}"))
        return detail.get("task", {}).get("state") not in (None, "queued", "running")

    wait_until(lambda: settled(made["id"]), 60, "the sandboxed task to finish", box)
    assert detail["task"]["state"] == "succeeded", f"{detail}\n{box.journal('appliance-sandbox@*')}"
    assert detail["task"]["result"]["stdout"].split() == ["65534", "no-config", "wrote"], detail["task"]["result"]
    start = next(step for step in detail["steps"] if step["message"] == "sandbox start")
    assert start["data"]["helper"] is True

    # A crash (SIGKILL) is restarted by systemd; the sandboxed run it had going dies with it.
    sleeper = json.loads(box.run(*console, "create", "--kind", "shell", "--", "sleep", "7777").stdout)["id"]
    wait_until(lambda: box.run("pgrep", "-x", "sleep", check=False).returncode == 0, 30, "the sandboxed sleep", box)
    unit = "appliance-agent.service"
    old_pid = box.show(unit, "MainPID")
    box.run("systemctl", "kill", "--signal=SIGKILL", unit)
    wait_until(lambda: box.show(unit, "NRestarts") == "1" and active_running(box, "agent")
               and box.show(unit, "MainPID") not in ("0", old_pid), 30, "agent restarted after SIGKILL", box)
    wait_until(lambda: box.run("pgrep", "-x", "sleep", check=False).returncode == 1, 30, "the sandbox to die", box)
    wait_until(lambda: settled(sleeper), 30, "the interrupted task to be settled", box)
    assert detail["task"]["state"] == "failed" and "agent stopped while this ran" in detail["task"]["error"]

    # A process whose event loop stops pinging the watchdog is killed and restarted.
    unit = "appliance-mqtt.service"
    old_pid = box.show(unit, "MainPID")
    box.run("systemctl", "kill", "--signal=SIGSTOP", unit)
    wait_until(lambda: box.show(unit, "NRestarts") == "1" and active_running(box, "mqtt")
               and box.show(unit, "MainPID") not in ("0", old_pid), 60, "mqtt restarted by the watchdog", box)
    assert "watchdog timeout" in box.journal(unit).lower() or "Watchdog timeout" in box.run(
        "journalctl", "--no-pager", "-b", check=False).stdout
