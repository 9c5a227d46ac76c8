"""Attacks on the control plane: forged and misused tokens, wrong roles, hostile bodies, guessing.

Each forged token is made the way an attacker would (PyJWT with their own choices of header,
key and claims) against a real api app, a real store and the box's real signing key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.dispatcher import Dispatcher
from appliance.ipc.peers import Peers
from appliance.protocol.accounts import ACCOUNTS_USER_GET, Username
from tests.helpers import api_client, bearer

pytestmark = pytest.mark.slow
Api = tuple[TestClient, Dispatcher, Peers]  # type: ignore[type-arg]


@pytest.fixture
async def api(config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> AsyncIterator[Api]:
    peers = await services("store")
    async with api_client(config, peers, max_body_bytes=64 * 1024) as (client, dispatcher):
        yield client, dispatcher, peers


def claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"iss": "appliance", "aud": "appliance-api", "sub": "mallory", "role": "admin",
                               "typ": "access", "jti": "ab" * 16, "iat": now, "nbf": now, "exp": now + 600}
    return {**base, **changes}


def forgeries(dispatcher: Dispatcher) -> dict[str, str]:
    kid, key = dispatcher.accounts.authority.keys.signing_key()
    public_pem = key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    ours = {"kid": kid}
    genuine = dispatcher.accounts.authority.issue("access", "mallory", Role.VIEWER, 600).token
    head, body, signature = genuine.split(".")
    promoted = json.loads(base64.urlsafe_b64decode(body + "=="))
    promoted["role"] = "admin"
    tampered_body = base64.urlsafe_b64encode(json.dumps(promoted).encode()).rstrip(b"=").decode()
    refresh = dispatcher.accounts.authority.issue("refresh", "mallory", Role.ADMIN, 600, family="cd" * 16).token
    return {
        "alg none": jwt.encode(claims(), None, algorithm="none", headers=ours),
        "HS256 keyed with our public key": _hs256_with(public_pem, claims(), ours),
        "a foreign key id": jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                       headers={"kid": "f" * 16}),
        "no key id": jwt.encode(claims(), key, algorithm="EdDSA"),  # type: ignore[arg-type]
        "our kid, someone else's key": jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                                  headers=ours),
        "expired": jwt.encode(claims(exp=int(time.time()) - 5), key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        "wrong issuer": jwt.encode(claims(iss="evil"), key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        "wrong audience": jwt.encode(claims(aud="other-api"), key, algorithm="EdDSA", headers=ours),  # type: ignore[arg-type]
        "no type": jwt.encode({k: v for k, v in claims().items() if k != "typ"}, key, algorithm="EdDSA",  # type: ignore[arg-type]
                              headers=ours),
        "a refresh token as access": refresh,
        "tampered payload": f"{head}.{tampered_body}.{signature}",
        "garbage": "not.a.token",
    }


def _hs256_with(secret: bytes, payload: dict[str, object], headers: dict[str, str]) -> str:
    """Algorithm confusion, forged by hand: PyJWT itself refuses to HMAC with a PEM public key."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    import hashlib
    import hmac

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', **headers}).encode())}." \
                    f"{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_forged_and_misused_tokens_are_refused(api: Api) -> None:
    client, dispatcher, _ = api
    for what, token in forgeries(dispatcher).items():
        reply = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
        assert reply.status == 401, what
        assert (await reply.json())["error"]["code"] == "unauthorized", what
        assert reply.headers["WWW-Authenticate"] == "Bearer", what
    assert (await client.get("/api/v1/users")).status == 401  # no token at all
    revoked = dispatcher.accounts.authority.issue("access", "mallory", Role.ADMIN, 600)
    logout = await client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {revoked.token}"})
    assert logout.status == 200
    reply = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {revoked.token}"})
    assert reply.status == 401 and (await reply.json())["error"]["message"] == "token was revoked"


async def test_roles_are_checked_on_the_server(api: Api) -> None:
    client, dispatcher, _ = api
    viewer = bearer(dispatcher, Role.VIEWER)
    for method, path, body in (("POST", "/api/v1/memory", {"text": "x"}), ("GET", "/api/v1/users", None),
                               ("POST", "/api/v1/tokens", {"name": "x", "role": "admin"}),
                               ("DELETE", "/api/v1/memory/1", None)):
        reply = await client.request(method, path, headers=viewer, json=body)
        assert reply.status == 403, path
    # A client that declares its own privileges in the body is refused by the model, not believed.
    sneaky = await client.post("/api/v1/memory", headers=viewer, json={"text": "x", "role": "admin"})
    assert sneaky.status == 403
    operator = bearer(dispatcher, Role.OPERATOR)
    sneaky = await client.post("/api/v1/memory", headers=operator, json={"text": "x", "role": "admin"})
    assert sneaky.status == 400 and (await sneaky.json())["error"]["field"] == "role"


async def test_oversized_and_malformed_bodies(api: Api) -> None:
    client, dispatcher, _ = api
    admin = bearer(dispatcher, Role.ADMIN)
    huge = await client.post("/api/v1/users", headers=admin, data=b"{" + b" " * 200_000 + b"}")
    assert huge.status == 413 and (await huge.json())["error"]["code"] == "too_large"
    login_huge = await client.post("/api/v1/auth/login", data=json.dumps({"username": "a", "password": "p" * 20_000}))
    assert login_huge.status == 413  # the login route takes 16 KiB at most
    for body, field in ((b'{"username": 5, "role": "viewer", "password": "x"}', "username"),
                        (b'{"username": "ok", "role": "root", "password": "long enough pw"}', "role"),
                        (b'{"username": "../../etc", "role": "viewer", "password": "long enough pw"}', "username"),
                        (b'{"username": "ok", "role": "viewer", "password": "short"}', "password")):
        reply = await client.post("/api/v1/users", headers=admin, data=body)
        error = (await reply.json())["error"]
        assert reply.status == 400 and error["field"] == field, (body, error)
        assert field in error["message"]
    broken = await client.post("/api/v1/users", headers=admin, data=b'{"username": ')
    assert broken.status == 400 and "invalid JSON" in (await broken.json())["error"]["message"]


async def test_ten_thousand_wrong_passwords_lock_the_account_and_cost_little(api: Api) -> None:
    client, dispatcher, peers = api
    made = await client.post("/api/v1/users", headers=bearer(dispatcher, Role.ADMIN),
                             json={"username": "victim", "role": "admin", "password": "the real password"})
    assert made.status == 201

    async def guess(i: int) -> int:
        reply = await client.post("/api/v1/auth/login", json={"username": "victim", "password": f"guess {i:05d}"})
        return reply.status

    statuses: list[int] = []
    for start in range(0, 10_000, 200):
        statuses += await asyncio.gather(*(guess(i) for i in range(start, start + 200)))
    # Only the first few guesses were ever checked against the hash; the rest were refused before.
    assert statuses.count(401) <= 20 and statuses.count(429) >= 9_980
    user = await peers.store.call(ACCOUNTS_USER_GET, Username(username="victim"))
    assert user.failed_logins <= 20 and user.locked_until is not None and user.locked_until > time.time()
    right = await client.post("/api/v1/auth/login", json={"username": "victim", "password": "the real password"})
    assert right.status == 429  # locked (or this address throttled): even the right password waits
