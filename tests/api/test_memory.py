"""REST memory routes against a real store process, with and without a real engine process."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.app import build_app
from appliance.api.auth import Role, TokenAuthority
from appliance.api.memory import MemoryRoutes
from appliance.config import load_config
from appliance.ipc.client import IpcClient
from appliance.protocol.store import STORE_AUDIT_VERIFY
from tests.api.test_app import health
from tests.conftest import serve
from tests.store.test_service import wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def processes(config_file: Path, request: pytest.FixtureRequest) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [serve(config_file, "store")]
    if request.param == "with-engine":
        started.append(serve(config_file, "engine"))
    yield started
    for process in started:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def api(config_file: Path, processes: list[subprocess.Popen[bytes]]) -> AsyncIterator[
        tuple[TestClient, TokenAuthority, IpcClient]]:  # type: ignore[type-arg]
    config = load_config(config_file)
    store = IpcClient("store", config.socket_path("store"), 10.0)
    engine = IpcClient("engine", config.socket_path("engine"), 10.0)
    await wait_ready(store)
    if len(processes) == 2:
        await wait_ready(engine)
    authority = TokenAuthority.from_config(config)
    routes = MemoryRoutes(store, engine, __import__("logging").getLogger("test"), auth_required=True)
    app = build_app(authority, health, max_body_bytes=128 * 1024, extra_routes=routes.add_to)
    async with TestClient(TestServer(app)) as client:
        yield client, authority, store
    await store.close()
    await engine.close()


def bearer(authority: TokenAuthority, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {authority.issue('alice', role, 600)}"}


@pytest.mark.parametrize("processes", ["with-engine", "store-only"], indirect=True)
async def test_post_then_search(api: tuple[TestClient, TokenAuthority, IpcClient],  # type: ignore[type-arg]
                                processes: list[subprocess.Popen[bytes]]) -> None:
    client, authority, store = api
    writer = bearer(authority, Role.OPERATOR)
    reply = await client.post("/api/v1/memory", headers=writer,
                              json={"text": "the loading dock door sticks in cold weather", "kind": "fact",
                                    "tags": ["dock"]})
    assert reply.status == 201, await reply.text()
    body = await reply.json()
    assert body["embedded"] is (len(processes) == 2)
    found = await client.get("/api/v1/memory/search", params={"q": "dock door", "k": "3"},
                             headers=bearer(authority, Role.VIEWER))
    assert found.status == 200, await found.text()
    result = await found.json()
    assert result["hits"][0]["record"]["id"] == body["id"]
    assert result["hits"][0]["record"]["source"] == "user:alice"
    assert result["mode"] == ("hybrid" if len(processes) == 2 else "text")
    assert (await store.call(STORE_AUDIT_VERIFY)).rows == 1


@pytest.mark.parametrize("processes", ["store-only"], indirect=True)
async def test_memory_routes_refuse_bad_requests(api: tuple[TestClient, TokenAuthority, IpcClient]) -> None:  # type: ignore[type-arg]
    client, authority, _ = api
    writer, viewer = bearer(authority, Role.OPERATOR), bearer(authority, Role.VIEWER)
    assert (await client.post("/api/v1/memory", json={"text": "x"})).status == 401
    forbidden = await client.post("/api/v1/memory", headers=viewer, json={"text": "x"})
    assert forbidden.status == 403
    cases = [
        ({"text": ""}, "text"),
        ({"text": "x", "kind": "gossip"}, "kind"),
        ({"text": "x", "embedding": [1.0]}, "embedding"),
        ({"text": "x", "tags": ["'; DROP TABLE memories; --"]}, "tag"),
        ({"text": "x" * 70_000}, "text"),
    ]
    for payload, named in cases:
        reply = await client.post("/api/v1/memory", headers=writer, json=payload)
        assert reply.status in (400, 413), payload
        assert named in (await reply.json())["error"]["message"], payload
    garbage = await client.post("/api/v1/memory", headers=writer, data=b"{not json")
    assert garbage.status == 400
    too_big = await client.post("/api/v1/memory", headers=writer, data=b"x" * 200_000)
    assert too_big.status == 413
    for params, named in [({}, "'q'"), ({"q": "x", "k": "0"}, "k"), ({"q": "x", "k": "lots"}, "k"),
                          ({"q": "x", "colour": "red"}, "colour"), ({"q": "x", "kind": "gossip"}, "kinds"),
                          ({"q": "x", "since": "10", "until": "5"}, "since"), ({"q": "x", "mode": "psychic"}, "mode"),
                          ({"q": "x", "mode": "vector"}, "engine")]:
        reply = await client.get("/api/v1/memory/search", headers=viewer, params=params)
        assert reply.status in (400, 503), params
        assert named in (await reply.json())["error"]["message"], params
    assert (await client.get("/api/v1/memory/search", params={"q": "x"})).status == 401
