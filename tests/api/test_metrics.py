"""GET /api/v1/metrics against a real engine process (tiny random-weight models), and without one."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.app import build_app
from appliance.api.auth import Role, TokenAuthority
from appliance.api.metrics import MetricsRoutes
from appliance.config import load_config
from appliance.ipc.client import IpcClient
from appliance.protocol.engine import ENGINE_GENERATE, GenerateRequest
from tests.api.test_app import health
from tests.conftest import serve
from tests.store.test_service import wait_ready


@pytest.fixture
def engine_process(config_file: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[bytes] | None]:
    process = serve(config_file, "engine") if request.param else None
    yield process
    if process is not None:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def api(config_file: Path, engine_process: subprocess.Popen[bytes] | None) -> AsyncIterator[
        tuple[TestClient, IpcClient, str]]:  # type: ignore[type-arg]
    config = load_config(config_file)
    engine = IpcClient("engine", config.socket_path("engine"), 10.0)
    if engine_process is not None:
        await wait_ready(engine)
    authority = TokenAuthority.from_config(config)
    app = build_app(authority, health, max_body_bytes=1024, extra_routes=MetricsRoutes(engine).add_to)
    async with TestClient(TestServer(app)) as client:
        yield client, engine, f"Bearer {authority.issue('prom', Role.VIEWER, 600)}"
    await engine.close()


@pytest.mark.parametrize("engine_process", [True], indirect=True)
async def test_metrics_in_prometheus_text(api: tuple[TestClient, IpcClient, str]) -> None:  # type: ignore[type-arg]
    client, engine, token = api
    async for _ in engine.stream(ENGINE_GENERATE, GenerateRequest(prompt="hi", max_tokens=5, ignore_eos=True)):
        pass
    response = await client.get("/api/v1/metrics", headers={"Authorization": token})
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    assert "# TYPE appliance_engine_generated_tokens_total counter" in text
    assert "appliance_engine_generated_tokens_total 5" in text and "appliance_engine_requests_total 1" in text
    assert "appliance_engine_kv_cells_total 512" in text and 'chat_model="' in text
    assert (await client.get("/api/v1/metrics")).status == 401


@pytest.mark.parametrize("engine_process", [False], indirect=True)
async def test_metrics_without_an_engine_is_503(api: tuple[TestClient, IpcClient, str]) -> None:  # type: ignore[type-arg]
    client, _, token = api
    response = await client.get("/api/v1/metrics", headers={"Authorization": token})
    assert response.status == 503 and "engine is down" in (await response.json())["error"]["message"]
