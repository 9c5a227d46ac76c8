"""The control plane's HTTP surface over a real socket: health, tokens, errors, the admin page.

No service runs behind it here (every service is `down`, which health must say); the routes
that need running services are in test_rest.py. Tokens, signing and HTTP are all real.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from appliance.api.app import build_app
from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.keys import SigningKeys
from appliance.control.table import default_table
from appliance.control.tokens import TokenAuthority
from appliance.ipc.peers import Peers
from appliance.protocol.services import SERVICE_NAMES


@pytest.fixture
async def dispatcher(config: ApplianceConfig) -> AsyncIterator[Dispatcher]:
    peers = Peers(config, timeout_s=2.0)
    yield Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    await peers.close()


@pytest.fixture
def authority(dispatcher: Dispatcher) -> TokenAuthority:
    return dispatcher.accounts.authority


@pytest.fixture
async def client(config: ApplianceConfig, dispatcher: Dispatcher) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    api = config.api.model_copy(update={"max_body_bytes": 4096})
    async with TestClient(TestServer(build_app(dispatcher, api))) as c:
        yield c


def issue(authority: TokenAuthority, role: Role, ttl: int = 60) -> str:
    return authority.issue("access", "admin", role, ttl).token


async def test_public_get_health_is_a_summary(client: TestClient) -> None:  # type: ignore[type-arg]
    reply = await client.get("/api/v1/health")
    assert reply.status == 200
    assert await reply.json() == {"status": "degraded", "services": {n: "down" for n in SERVICE_NAMES}}


async def test_health_under_load_reads_the_services_once_for_many_requests(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    """200 requests at once: they share one read of the five services (control/system.py), and a
    request after HEALTH_FRESH_S reads again, so a change shows within half a second."""
    from appliance.control import system

    reads = 0
    real_read = system._read_all

    async def counted(ctx: object) -> object:
        nonlocal reads
        reads += 1
        return await real_read(ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(system, "_read_all", counted)
    started = time.monotonic()
    replies = await asyncio.gather(*(client.get("/api/v1/health") for _ in range(200)))
    took = time.monotonic() - started
    assert {r.status for r in replies} == {200}
    assert reads <= 1 + took / system.HEALTH_FRESH_S  # one read per half second, however many requests
    assert {(await r.json())["status"] for r in replies} == {"degraded"}
    before = reads
    await asyncio.sleep(system.HEALTH_FRESH_S + 0.1)
    assert (await client.get("/api/v1/health")).status == 200 and reads == before + 1


async def test_post_health_with_token_lists_all_five(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    token = issue(authority, Role.ADMIN)
    reply = await client.post("/api/v1/health", json={"token": token})
    assert reply.status == 200
    body = await reply.json()
    assert [s["name"] for s in body["services"]] == list(SERVICE_NAMES)
    assert all(s["state"] == "down" and "cannot connect" in s["detail"] for s in body["services"])
    bearer = await client.get("/api/v1/health", headers={"Authorization": f"Bearer {token}"})
    assert len((await bearer.json())["services"]) == 5


async def test_errors_and_details_carry_their_phrase(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    """Besides the English message, the code and arguments the page renders in its language."""
    missing = await client.post("/api/v1/health", json={})
    problem = (await missing.json())["error"]["problems"][0]
    assert problem == {"field": "token", "message": "Field required",
                       "phrase": {"code": "validation.missing", "args": {}}}
    short = await client.post("/api/v1/tokens", json={"name": "door", "role": "viewer", "ttl_s": 5},
                              headers={"Authorization": f"Bearer {issue(authority, Role.ADMIN)}"})
    assert (await short.json())["error"]["problems"][0]["phrase"] == {
        "code": "validation.greater_than_equal", "args": {"ge": "60"}}
    refused = await client.post("/api/v1/tokens", json={"name": "x", "role": "viewer"},
                                headers={"Authorization": f"Bearer {issue(authority, Role.VIEWER)}"})
    error = (await refused.json())["error"]
    assert refused.status == 403 and error["phrase"] == {
        "code": "command.needs_role", "args": {"command": "tokens.create", "role": "admin", "has": "viewer"}}
    assert error["message"] == "tokens.create needs the admin role; this token has viewer"
    report = await client.post("/api/v1/health", json={"token": issue(authority, Role.ADMIN)})
    for service in (await report.json())["services"]:
        [phrase] = service["detail_phrases"]
        assert phrase["code"] == "service.unreachable" and service["detail"] == phrase["args"]["why"]
    words = await client.get("/static/phrases/zh.json")
    assert words.status == 200 and (await words.json())["memory.not_found"] == "没有 ID 为 {id} 的记忆"


def foreign_tokens(authority: TokenAuthority) -> list[str]:
    now = int(time.time())
    claims = {"iss": "appliance", "aud": "appliance-api", "sub": "x", "role": "admin", "typ": "access",
              "iat": now, "exp": now + 60, "jti": "1"}
    kid, key = authority.keys.signing_key()
    ours = {"kid": kid}
    return [
        jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=ours),  # someone else's key
        jwt.encode(claims, None, algorithm="none", headers=ours),  # alg=none
        jwt.encode(claims, "k" * 40, algorithm="HS256", headers=ours),  # algorithm confusion
        jwt.encode({**claims, "exp": now - 10}, key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        jwt.encode({**claims, "aud": "other"}, key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        jwt.encode({**claims, "role": "god"}, key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        "not.a.token", "x" * 9000,
    ]


async def test_bad_tokens_are_refused(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    for token in foreign_tokens(authority):
        reply = await client.post("/api/v1/health", json={"token": token})
        assert reply.status in (400, 401, 413), token[:40]
        assert "error" in await reply.json()
        header = await client.get("/api/v1/health", headers={"Authorization": f"Bearer {token}"})
        assert header.status in (400, 401), token[:40]  # 400: a header over aiohttp's line limit
    expired = foreign_tokens(authority)[3]
    reply = await client.post("/api/v1/health", json={"token": expired})
    assert (await reply.json())["error"]["message"] == "token has expired"


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{not json", 400, "invalid JSON"),
    (b"[]", 400, "body"),
    (b'{"token": 5}', 400, "token: Input should be a valid string"),
    (b"{}", 400, "token: Field required"),
    (b'{"token": "a", "admin": true}', 400, "admin: unknown key"),
    (b'{"token": "' + b"a" * 5000 + b'"}', 413, "api.max_body_bytes"),
])
async def test_malformed_bodies(client: TestClient, body: bytes, status: int, fragment: str) -> None:  # type: ignore[type-arg]
    reply = await client.post("/api/v1/health", data=body, headers={"Content-Type": "application/json"})
    assert reply.status == status
    assert fragment in (await reply.json())["error"]["message"]


async def test_other_routes_need_a_token(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    reply = await client.get("/api/v1/memory/search?q=x")
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    token = issue(authority, Role.VIEWER)
    reply = await client.get("/api/v1/nothing", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 404 and (await reply.json())["error"]["code"] == "not_found"


async def test_tokens_never_travel_in_the_url(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    token = issue(authority, Role.ADMIN)
    reply = await client.get(f"/api/v1/memory/search?q=x&token={token}",
                             headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 400 and "never go in the URL" in (await reply.json())["error"]["message"]


async def test_admin_page_is_served(client: TestClient) -> None:  # type: ignore[type-arg]
    """The shell, its modules and catalogues, under the strict policy (its flows: tests/api/static)."""
    reply = await client.get("/")
    assert reply.status == 200 and '<script type="module" src="/static/js/main.js">' in await reply.text()
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'self'")
    module = await client.get("/static/js/main.js")
    assert module.status == 200 and "javascript" in module.headers["Content-Type"]
    catalogue = await client.get("/static/i18n/zh.json")
    assert catalogue.status == 200 and (await catalogue.json())["nav.dashboard"] == "仪表盘"
    assert (await client.get("/static/../appliance/api/app.py")).status in (403, 404)


def test_hs256_when_a_secret_is_configured(config: ApplianceConfig) -> None:
    secret = config.model_copy(update={"security": config.security.model_copy(
        update={"jwt_secret": SecretStr("s" * 40)})})
    authority = TokenAuthority(SigningKeys.for_config(secret))
    token = authority.issue("access", "ops", Role.OPERATOR, 60).token
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert authority.verify(token).role is Role.OPERATOR


def test_key_is_made_once_and_owner_only(config: ApplianceConfig) -> None:
    first = TokenAuthority(SigningKeys.for_config(config))
    second = TokenAuthority(SigningKeys.for_config(config))
    token = first.issue("access", "a", Role.ADMIN, 60).token
    assert second.verify(token).sub == "a"
    folder = Path(config.paths.state_dir) / "keys" / "jwt"
    kid = (folder / "current").read_text()
    assert jwt.get_unverified_header(token)["kid"] == kid
    assert (folder / f"{kid}.pem").stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
