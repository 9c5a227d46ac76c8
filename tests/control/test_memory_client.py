"""One engine-down policy for every surface: the CLI and REST give the same answers.

Real store process, no engine process: vector search is refused as unavailable with the same
message everywhere; hybrid search falls back to text and says so; remember stores unembedded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from tests.helpers import api_client, bearer

pytestmark = pytest.mark.slow


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(config_file), *args],
                          capture_output=True, text=True, timeout=60, check=False)


async def test_cli_and_rest_answer_alike_with_the_engine_down(
        config_file: Path, config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    async with api_client(config, peers) as (client, dispatcher):
        headers = bearer(dispatcher, Role.OPERATOR)
        stored = await client.post("/api/v1/memory", headers=headers, json={"text": "valve V-7 leaks"})
        assert (await stored.json())["embedded"] is False
        remembered = cli(config_file, "memory", "remember", "valve V-9 was replaced")
        assert json.loads(remembered.stdout)["embedded"] is False

        rest = await client.get("/api/v1/memory/search", headers=headers, params={"q": "valve", "mode": "vector"})
        shell = cli(config_file, "memory", "recall", "valve", "--mode", "vector")
        rest_error = (await rest.json())["error"]
        assert (rest.status, rest_error["code"]) == (503, "unavailable")
        assert shell.returncode == 1 and shell.stdout == ""
        assert shell.stderr.strip().splitlines()[-1] == f"appliance: {rest_error['message']}"
        assert "vector search needs the engine's embedding model" in rest_error["message"]

        rest = await client.get("/api/v1/memory/search", headers=headers, params={"q": "valve", "k": "5"})
        shell = cli(config_file, "memory", "recall", "valve", "-k", "5")
        by_rest, by_shell = await rest.json(), json.loads(shell.stdout)
        for answer in (by_rest, by_shell):
            assert answer["mode"] == "text" and answer["fallback"].startswith("hybrid search fell back to text")
        assert [h["record"]["id"] for h in by_rest["hits"]] == [h["record"]["id"] for h in by_shell["hits"]]
        assert len(by_rest["hits"]) == 2
