"""The api process as it runs on a box: first boot prints a one-time setup token, which creates
the first admin over HTTP; once a user exists no token is printed again."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig
from appliance.ipc.peers import Peers
from tests.helpers import eventually

pytestmark = pytest.mark.slow


def post(port: int, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_first_boot_setup_token_as_a_user_sees_it(config: ApplianceConfig, tmp_path: Path,
                                                        services: Callable[..., Awaitable[Peers]]) -> None:
    await services("store", "api")
    log = tmp_path / "api.log"
    line = eventually(lambda: re.search(r"one-time setup token (\S+) \*\*\*", log.read_text()), 10, "the banner")
    token = line.group(1)
    assert "create the first admin" in log.read_text()  # the journal line, besides the console banner
    port = config.api.port
    status, reply = post(port, "/api/v1/auth/setup", {"setup_token": token, "username": "site-admin",
                                                      "password": "a long first password"})
    assert status == 200 and reply["role"] == "admin"
    status, _ = post(port, "/api/v1/auth/setup", {"setup_token": token, "username": "intruder",
                                                      "password": "a long first password"})
    assert status == 401
    status, login = post(port, "/api/v1/auth/login", {"username": "site-admin", "password": "a long first password"})
    assert status == 200 and login["expires_in"] == 900
