"""The control plane's HTTP surface over a real socket: health, tokens, errors, the admin page.

No service runs behind it here (every service is `down`, which health must say); the routes
that need running services are in test_rest.py. Tokens, signing and HTTP are all real.
"""

from __future__ import annotations

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
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.control.tokens import TokenAuthority
from appliance.ipc.peers import Peers
from appliance.protocol.services import SERVICE_NAMES


@pytest.fixture
def authority(config: ApplianceConfig) -> TokenAuthority:
    return TokenAuthority.from_config(config)


@pytest.fixture
async def client(config: ApplianceConfig, authority: TokenAuthority) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async def authenticate(token: str) -> Caller:
        return authority.caller(token, "rest")

    peers = Peers(config, timeout_s=2.0)
    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"), authenticate=authenticate)
    async with TestClient(TestServer(build_app(dispatcher, authority, max_body_bytes=4096))) as c:
        yield c
    await peers.close()


async def test_public_get_health_is_a_summary(client: TestClient) -> None:  # type: ignore[type-arg]
    reply = await client.get("/api/v1/health")
    assert reply.status == 200
    assert await reply.json() == {"status": "degraded", "services": {n: "down" for n in SERVICE_NAMES}}


async def test_post_health_with_token_lists_all_five(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    token = authority.issue("admin", Role.ADMIN, 60)
    reply = await client.post("/api/v1/health", json={"token": token})
    assert reply.status == 200
    body = await reply.json()
    assert [s["name"] for s in body["services"]] == list(SERVICE_NAMES)
    assert all(s["state"] == "down" and "cannot connect" in s["detail"] for s in body["services"])
    bearer = await client.get("/api/v1/health", headers={"Authorization": f"Bearer {token}"})
    assert len((await bearer.json())["services"]) == 5


def foreign_tokens(authority: TokenAuthority) -> list[str]:
    now = int(time.time())
    claims = {"iss": "appliance", "aud": "appliance-api", "sub": "x", "role": "admin",
              "iat": now, "exp": now + 60, "jti": "1"}
    return [
        jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),  # someone else's key
        jwt.encode(claims, None, algorithm="none"),  # alg=none
        jwt.encode(claims, "k" * 40, algorithm="HS256"),  # algorithm confusion
        jwt.encode({**claims, "exp": now - 10}, authority._signing_key, algorithm="EdDSA"),  # type: ignore[arg-type]
        jwt.encode({**claims, "aud": "other"}, authority._signing_key, algorithm="EdDSA"),  # type: ignore[arg-type]
        jwt.encode({**claims, "role": "god"}, authority._signing_key, algorithm="EdDSA"),  # type: ignore[arg-type]
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
    token = authority.issue("admin", Role.VIEWER, 60)
    reply = await client.get("/api/v1/nothing", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 404 and (await reply.json())["error"]["code"] == "not_found"


async def test_tokens_never_travel_in_the_url(client: TestClient, authority: TokenAuthority) -> None:  # type: ignore[type-arg]
    token = authority.issue("admin", Role.ADMIN, 60)
    reply = await client.get(f"/api/v1/memory/search?q=x&token={token}",
                             headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 400 and "never go in the URL" in (await reply.json())["error"]["message"]


async def test_admin_page_is_served(client: TestClient) -> None:  # type: ignore[type-arg]
    reply = await client.get("/")
    assert reply.status == 200 and "Appliance" in await reply.text()
    assert reply.headers["Content-Security-Policy"] == "default-src 'self'"


def test_hs256_when_a_secret_is_configured(config: ApplianceConfig) -> None:
    secret = config.model_copy(update={"security": config.security.model_copy(
        update={"jwt_secret": SecretStr("s" * 40)})})
    authority = TokenAuthority.from_config(secret)
    token = authority.issue("ops", Role.OPERATOR, 60)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert authority.verify(token).role is Role.OPERATOR


def test_key_is_made_once_and_owner_only(config: ApplianceConfig) -> None:
    first = TokenAuthority.from_config(config)
    second = TokenAuthority.from_config(config)
    token = first.issue("a", Role.ADMIN, 60)
    assert second.verify(token).sub == "a"
    key = Path(config.paths.state_dir) / "keys" / "jwt-ed25519.pem"
    assert key.stat().st_mode & 0o777 == 0o600
