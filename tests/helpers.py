"""Helpers every test may use: ports, config files, service processes, waiting for state.

Test modules import from here, never from each other. Nothing here is a mock: processes are
the real `appliance serve`, sockets are real, waiting polls real state with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from aiohttp.test_utils import TestClient, TestServer

from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.client import IpcClient
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState


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


def write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def serve(config_file: Path, service: str, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`appliance serve SERVICE` in its own process, as systemd runs it (its log is discarded)."""
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", service],
                            stdout=output, stderr=output)


async def wait_ready(client: IpcClient[Any], timeout_s: float = 30.0) -> None:
    """Until the service answers health with `ready` (a service that says `degraded` keeps waiting)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = await client.call(HEALTH, timeout_s=1.0)
            if health.state is ServiceState.READY:
                return
            last = f"{health.state.value}: {health.detail}"
        except Exception as exc:
            last = str(exc)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{client.service} did not become ready within {timeout_s} s ({last})")


def eventually(predicate: Callable[[], Any], timeout_s: float, what: str, *, every_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (OSError counts as not yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except OSError:
            pass
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def eventually_async(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str,
                           *, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def vec(i: int, dim: int = 8) -> list[float]:
    """A distinct, deterministic vector for the ``i``-th test memory (near its neighbours)."""
    v = np.zeros(dim)
    v[i % dim] = 1.0
    v[(i + 1) % dim] = 0.1 * (i // dim + 1)
    return [float(x) for x in v]


@contextlib.asynccontextmanager
async def api_client(config: ApplianceConfig, peers: Peers, **api: Any) -> AsyncIterator[tuple[TestClient, Dispatcher]]:  # type: ignore[type-arg]
    """The real control-plane app over the real command table, on a test server; ``api`` overrides api.* keys."""
    from appliance.api.app import build_app

    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    app = build_app(dispatcher, config.api.model_copy(update=api), auth_required=config.security.auth_required)
    async with TestClient(TestServer(app)) as client:
        yield client, dispatcher


def bearer(dispatcher: Dispatcher, role: Role, subject: str = "alice", ttl_s: int = 600) -> dict[str, str]:
    """An Authorization header with an access token signed by the box's key."""
    token = dispatcher.accounts.authority.issue("access", subject, role, ttl_s).token
    return {"Authorization": f"Bearer {token}"}
