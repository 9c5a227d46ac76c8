"""The sandbox helper's wire, its workspace, and an agent that goes away mid-run.

Here the test accepts the connections itself and hands each to serve_connection, as systemd's
Accept=yes socket does for appliance-sandbox@.service (which tests/systemd/test_boot.py runs for real).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.agent import sandbox
from appliance.agent.helper import run_via_helper, serve_connection
from appliance.config import SandboxLimits
from tests.helpers import eventually, pids_with

pytestmark = pytest.mark.slow


@pytest.fixture
async def helper(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    path, workspaces = tmp_path / "sandbox.sock", tmp_path / "workspaces"
    workspaces.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    listener.setblocking(False)
    served: set[asyncio.Task[None]] = set()

    async def accept() -> None:
        while True:
            connection, _ = await asyncio.get_running_loop().sock_accept(listener)
            task = asyncio.create_task(serve_connection(connection, workspaces))
            served.add(task)
            task.add_done_callback(served.discard)

    accepting = asyncio.create_task(accept())
    yield path, workspaces
    accepting.cancel()
    await asyncio.gather(accepting, *served, return_exceptions=True)
    listener.close()


async def test_a_run_through_the_helper(helper: tuple[Path, Path]) -> None:
    path, workspaces = helper
    script = "id -u; mkdir -p /work/a/b; echo x > /work/a/b/f; chmod 000 /work/a/b /work/a; echo done"
    outcome = await run_via_helper(path, ["/bin/sh", "-c", script], sandbox.Profile())
    assert outcome.ok and outcome.stdout == "65534\ndone\n", outcome
    assert list(workspaces.iterdir()) == []  # what uid 65534 left, locked or not, is gone

    timed_out = await run_via_helper(path, ["sleep", "30"], sandbox.Profile(limits=SandboxLimits(wall_s=0.5)))
    assert timed_out.limit == "wall_time"


async def test_the_sandbox_dies_when_the_agent_goes_away(helper: tuple[Path, Path]) -> None:
    path, workspaces = helper
    marker = f"marker-{uuid.uuid4().hex}"
    run = asyncio.create_task(run_via_helper(path, ["sh", "-c", f"sleep 300; : {marker}"], sandbox.Profile()))
    await asyncio.to_thread(eventually, lambda: pids_with(marker), 30, "the sandboxed sleep")
    run.cancel()  # what the agent's cancel, timeout or death does to the connection
    await asyncio.gather(run, return_exceptions=True)
    await asyncio.to_thread(eventually, lambda: not pids_with(marker), 10, "the sandbox to be killed")
    await asyncio.to_thread(eventually, lambda: not any(workspaces.iterdir()), 10, "the workspace to be removed")


async def test_bad_requests_are_refused_by_name(helper: tuple[Path, Path]) -> None:
    path, _ = helper
    for line in (b"not json\n", b'{"argv": []}\n', b'{"argv": ["id"], "profile": {}, "root": true}\n',
                 b'{"argv": ["id"], "profile": {"readable": ["etc"]}}\n', b"x" * (2 << 20) + b"\n"):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(line)
            await writer.drain()
            answer = await reader.readline()
        except ConnectionResetError:  # an oversized line: it answers after 1 MiB and hangs up on the rest
            assert len(line) > 1 << 20
            continue
        finally:
            writer.close()
        assert answer.startswith(b'{"error": "bad request'), answer[:200]
