"""Shared fixtures: real brokers, real models, real config files; nothing here is a mock."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from appliance.config import ApplianceConfig, load_config
from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random-weight chat model and a 384-dim embedding model, written once per run."""
    folder = tmp_path_factory.mktemp("models")
    return {
        "chat": write_tiny_llama(folder / "chat.gguf", CHAT_SHAPE, seed=0),
        "embedding": write_tiny_llama(folder / "embedding.gguf", embedding_shape(384), seed=1),
    }


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real mosquitto broker on a free loopback port; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is not installed (.ci/run installs it)")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def serve(config_file: Path, service: str) -> subprocess.Popen[bytes]:
    """`appliance serve SERVICE` in its own process, as systemd runs it (its log is discarded)."""
    return subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", service],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def config_file(tmp_path: Path, models: dict[str, Path]) -> Path:
    """A complete config in tmp_path: its own state and runtime dirs, the tiny models, free ports."""
    return write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "engine": {"chat_model": str(models["chat"]), "embedding_model": str(models["embedding"]),
                   "n_ctx": 512, "n_threads": 1},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "mqtt": {"host": "127.0.0.1", "port": free_port()},
        "agent": {"heartbeat_interval_s": 0.5},
    })


@pytest.fixture
def config(config_file: Path) -> ApplianceConfig:
    return load_config(config_file)
