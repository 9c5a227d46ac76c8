"""Accounts end to end over REST with a real store: first boot, logins, refresh families, logout,
revocation from another process, disabling, lockout, OAuth2 forms, password changes, key rotation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.users import Rotated
from appliance.ipc.peers import Peers
from appliance.protocol.accounts import ACCOUNTS_TOKEN_REVOKE, ACCOUNTS_USER_GET, TokenId, Username
from appliance.protocol.store import STORE_AUDIT_LIST, AuditQuery
from tests.helpers import api_client, bearer

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
Api = tuple[TestClient, Dispatcher, Peers]  # type: ignore[type-arg]


@pytest.fixture
async def api(config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> AsyncIterator[Api]:
    peers = await services("store")
    async with api_client(config, peers) as (client, dispatcher):
        yield client, dispatcher, peers


async def make_user(client: TestClient, dispatcher: Dispatcher, name: str, role: str = "operator") -> None:  # type: ignore[type-arg]
    reply = await client.post("/api/v1/users", headers=bearer(dispatcher, Role.ADMIN),
                              json={"username": name, "role": role, "password": PASSWORD})
    assert reply.status == 201, await reply.text()


async def login(client: TestClient, name: str, password: str = PASSWORD) -> Any:  # type: ignore[type-arg]
    reply = await client.post("/api/v1/auth/login", json={"username": name, "password": password})
    return reply.status, await reply.json()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_first_boot_setup_creates_the_first_admin_once(api: Api) -> None:
    client, dispatcher, peers = api
    assert (await (await client.get("/api/v1/auth/setup")).json())["needed"] is False
    token = await dispatcher.accounts.prepare_first_boot()
    assert token is not None and (await (await client.get("/api/v1/auth/setup")).json())["needed"] is True
    wrong = await client.post("/api/v1/auth/setup", json={"setup_token": "guess", "username": "root",
                                                          "password": PASSWORD})
    assert wrong.status == 401
    weak = await client.post("/api/v1/auth/setup", json={"setup_token": token, "username": "ada", "password": "short"})
    assert weak.status == 400 and (await weak.json())["error"]["field"] == "password"
    done = await client.post("/api/v1/auth/setup", json={"setup_token": token, "username": "ada", "password": PASSWORD})
    assert done.status == 200, await done.text()
    pair = await done.json()
    assert pair["role"] == "admin" and pair["token_type"] == "bearer" and pair["expires_in"] == 900
    me = await client.get("/api/v1/auth/me", headers=auth(pair["access_token"]))
    assert (await me.json())["subject"] == "ada"
    again = await client.post("/api/v1/auth/setup",
                              json={"setup_token": token, "username": "eve", "password": PASSWORD})
    assert again.status == 401  # spent
    assert await dispatcher.accounts.prepare_first_boot() is None  # users exist: no new token
    audit = await peers.store.call(STORE_AUDIT_LIST, AuditQuery(action="auth.setup"))
    newest_first = [(r.user_id, r.details["ok"]) for r in audit.items]
    # The short password was refused by the schema before anything ran: nothing to record.
    assert newest_first == [("eve", False), ("ada", True), ("root", False)]
    assert all("password" not in str(r.details) and PASSWORD not in str(r.details) for r in audit.items)


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_family(api: Api) -> None:
    client, dispatcher, _ = api
    await make_user(client, dispatcher, "bob")
    status, first = await login(client, "bob")
    assert status == 200
    second = await (await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    assert second["access_token"] != first["access_token"]
    replay = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status == 401 and "used before" in (await replay.json())["error"]["message"]
    # The thief's replay ended the whole family: the legitimate newest refresh token is dead too.
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status == 401 and "revoked" in (await after.json())["error"]["message"]
    as_bearer = await client.get("/api/v1/auth/me", headers=auth(second["refresh_token"]))
    assert as_bearer.status == 401
    assert "refresh token cannot be used here" in (await as_bearer.json())["error"]["message"]


async def test_logout_ends_the_access_token_and_its_session(api: Api) -> None:
    client, dispatcher, _ = api
    await make_user(client, dispatcher, "carol", "viewer")
    _, pair = await login(client, "carol")
    out = await client.post("/api/v1/auth/logout", headers=auth(pair["access_token"]),
                            json={"refresh_token": pair["refresh_token"]})
    assert out.status == 200 and (await out.json())["detail"] == "2 token(s) ended"
    assert (await client.get("/api/v1/auth/me", headers=auth(pair["access_token"]))).status == 401
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status == 401


async def test_revocation_by_another_process_and_disabling_take_effect(api: Api) -> None:
    client, dispatcher, peers = api
    made = await client.post("/api/v1/tokens", headers=bearer(dispatcher, Role.ADMIN),
                             json={"name": "door panel", "role": "viewer", "ttl_s": 3600})
    app_token = (await made.json())
    assert (await client.get("/api/v1/auth/me", headers=auth(app_token["token"]))).status == 200
    await peers.store.call(ACCOUNTS_TOKEN_REVOKE, TokenId(jti=app_token["jti"]))  # as the CLI would
    await dispatcher.accounts.catch_up()  # what the api's follower does every second
    assert (await client.get("/api/v1/auth/me", headers=auth(app_token["token"]))).status == 401

    await make_user(client, dispatcher, "dave")
    _, pair = await login(client, "dave")
    off = await client.patch("/api/v1/users/dave", headers=bearer(dispatcher, Role.ADMIN), json={"disabled": True})
    assert off.status == 200 and (await off.json())["disabled"] is True
    await dispatcher.accounts.catch_up()
    refused = await client.get("/api/v1/auth/me", headers=auth(pair["access_token"]))
    assert refused.status == 401 and "disabled" in (await refused.json())["error"]["message"]
    assert (await login(client, "dave"))[0] == 401
    await client.patch("/api/v1/users/dave", headers=bearer(dispatcher, Role.ADMIN), json={"disabled": False})
    await dispatcher.accounts.catch_up()
    assert (await login(client, "dave"))[0] == 200


async def test_the_last_admin_cannot_lock_everyone_out(api: Api) -> None:
    client, dispatcher, _ = api
    await make_user(client, dispatcher, "root", "admin")
    admin = bearer(dispatcher, Role.ADMIN)
    for change in ({"disabled": True}, {"role": "viewer"}):
        reply = await client.patch("/api/v1/users/root", headers=admin, json=change)
        assert reply.status == 409 and "last admin" in (await reply.json())["error"]["message"]
    await make_user(client, dispatcher, "root2", "admin")
    assert (await client.patch("/api/v1/users/root", headers=admin, json={"disabled": True})).status == 200


async def test_lockout_after_failures_refuses_even_the_right_password_until_unlocked(api: Api) -> None:
    client, dispatcher, peers = api
    await make_user(client, dispatcher, "erin")
    for _ in range(5):
        assert (await login(client, "erin", "wrong password!"))[0] == 401
    status, body = await login(client, "erin")
    assert status == 429 and "ask an admin to unlock" in body["error"]["message"] and body["error"]["retry_after"] > 0
    user = await peers.store.call(ACCOUNTS_USER_GET, Username(username="erin"))
    assert user.failed_logins == 5 and user.locked_until is not None
    unlock = await client.patch("/api/v1/users/erin", headers=bearer(dispatcher, Role.ADMIN), json={"unlock": True})
    assert (await unlock.json())["locked_until"] is None
    assert (await login(client, "erin"))[0] == 200
    failures = await peers.store.call(STORE_AUDIT_LIST, AuditQuery(user="erin", action="auth.login"))
    assert [r.details["ok"] for r in failures.items].count(False) == 6


async def test_oauth2_password_form_and_refresh_grant(api: Api) -> None:
    client, dispatcher, _ = api
    await make_user(client, dispatcher, "fred")
    reply = await client.post("/api/v1/auth/token", data={"grant_type": "password", "username": "fred",
                                                           "password": PASSWORD, "scope": ""})
    assert reply.status == 200, await reply.text()
    pair = await reply.json()
    again = await client.post("/api/v1/auth/token", data={"grant_type": "refresh_token",
                                                           "refresh_token": pair["refresh_token"]})
    assert again.status == 200 and (await again.json())["username"] == "fred"
    missing = await client.post("/api/v1/auth/token", data={"grant_type": "password", "username": "fred"})
    assert missing.status == 400 and (await missing.json())["error"]["field"] == "password"


async def test_password_change_ends_other_sessions(api: Api) -> None:
    client, dispatcher, _ = api
    await make_user(client, dispatcher, "gina")
    _, one = await login(client, "gina")
    _, two = await login(client, "gina")
    change = await client.post("/api/v1/auth/password", headers=auth(one["access_token"]),
                               json={"current_password": PASSWORD, "new_password": "a much longer passphrase"})
    assert change.status == 200, await change.text()
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": two["refresh_token"]})).status == 401
    assert (await login(client, "gina"))[0] == 401
    assert (await login(client, "gina", "a much longer passphrase"))[0] == 200


async def test_per_address_limit_refuses_before_any_password_is_hashed(
        config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    limited = config.model_copy(update={"security": config.security.model_copy(
        update={"login_per_ip_per_minute": 3})})
    async with api_client(limited, peers) as (client, _):
        statuses = [(await login(client, f"nobody{i}"))[0] for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_rotated_key_still_verifies_its_tokens_until_retired(api: Api, config: ApplianceConfig) -> None:
    client, dispatcher, _ = api
    old_token = dispatcher.accounts.authority.issue("access", "hana", Role.VIEWER, 600).token
    rotated = await dispatcher.call("keys.rotate", {}, Caller.local())
    assert isinstance(rotated, Rotated)
    new_token = dispatcher.accounts.authority.issue("access", "hana", Role.VIEWER, 600).token
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.kid != rotated.old_kid
    for token in (old_token, new_token):
        assert (await client.get("/api/v1/auth/me", headers=auth(token))).status == 200
    folder = Path(config.paths.state_dir) / "keys" / "jwt"
    assert float((folder / f"{rotated.old_kid}.retire").read_text()) > time.time()
    (folder / f"{rotated.old_kid}.retire").write_text("1")  # as if its tokens had all expired
    dispatcher.accounts.authority.keys.load()
    assert (await client.get("/api/v1/auth/me", headers=auth(old_token))).status == 401
    assert (await client.get("/api/v1/auth/me", headers=auth(new_token))).status == 200
