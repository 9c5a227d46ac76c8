"""A real service process under the real sd_notify protocol: the test plays the manager."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    return sock


def read_until(sock: socket.socket, wanted: str, timeout_s: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seen.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            continue
        if wanted in seen:
            return seen
    raise AssertionError(f"{wanted!r} never arrived; got {seen}")


@pytest.mark.parametrize("service", ["store", "agent"])
def test_ready_watchdog_and_graceful_stop(config_file: Path, tmp_path: Path, service: str) -> None:
    sock = notify_socket(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", service],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen = read_until(sock, "READY=1", 30)
        assert any(line.startswith("STATUS=") for line in seen)
        pings = read_until(sock, "WATCHDOG=1", 2)
        assert "WATCHDOG=1" in pings
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
        assert time.monotonic() - started < 5
        assert "STOPPING=1" in read_until(sock, "STOPPING=1", 1)
        assert not (config_file.parent / "run" / f"{service}.sock").exists()
    finally:
        process.kill()
        process.wait()
        sock.close()


def test_logs_carry_structured_fields_on_stderr(config_file: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", "store"],
                               stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    assert "appliance.store: state ready" in err
    assert "SERVICE_STATE=ready" in err
