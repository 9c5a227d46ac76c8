"""Idle, slow and surplus connections (api/connections.py): bounded, counted, in health, and never
in the way of a client that behaves. The guard is tested on a real aiohttp site with raw sockets,
then on the real api process with 10,000 idle connections (issue 26's bad-input list)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from appliance.api.connections import ConnectionGuard, GuardedSite
from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH
from tests.helpers import api_client, bearer, eventually, eventually_async, free_port


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
        return reply.status, reply.read()


@contextlib.asynccontextmanager
async def site(guard: ConnectionGuard, release: asyncio.Event | None = None) -> AsyncIterator[int]:
    """A real aiohttp site behind the guard: GET / answers at once, GET /wait when ``release`` is set."""

    async def quick(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def wait(_: web.Request) -> web.Response:
        assert release is not None
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/", quick)
    app.router.add_get("/wait", wait)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await GuardedSite(runner, "127.0.0.1", port, ssl_context=None, guard=guard).start()
    guard.start()
    try:
        yield port
    finally:
        await guard.stop()
        await runner.cleanup()


async def fetch(port: int, path: str) -> bytes:
    """One request on a connection of its own (not a thread each: the executor has only a few); its head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


def closed_by_peer(sock: socket.socket) -> bool:
    with contextlib.suppress(BlockingIOError):
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True
    return False


def raw(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def test_a_slowloris_head_is_cut_off_and_others_are_served() -> None:
    guard = ConnectionGuard(cap=64, head_timeout_s=1.0, socket_cap=10)
    async with site(guard) as port:
        slow, silent = raw(port, 2)
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(6):  # a header byte every 0.4 s, never the blank line that ends the head
            assert (await asyncio.to_thread(get, port))[0] == 200  # a good client meanwhile
            with contextlib.suppress(OSError):
                slow.send(b"X")
            await asyncio.sleep(0.4)
        await eventually_async(lambda: _true(closed_by_peer(slow) and closed_by_peer(silent)), 10,
                               "the slow and the silent connection closed")
        assert guard.counts.slow == 2 and "closed 2 slow to send a request" in str(guard.summary())
        for sock in (slow, silent):
            sock.close()


async def _true(value: bool) -> bool:
    return value


async def test_past_the_cap_the_longest_idle_connection_makes_room() -> None:
    guard = ConnectionGuard(cap=20, head_timeout_s=60.0, socket_cap=10)
    async with site(guard) as port:
        idle = raw(port, 50)
        await eventually_async(lambda: _true(guard.counts.evicted == 30), 10, "30 evicted")
        assert all(closed_by_peer(sock) for sock in idle[:30])  # the oldest went first
        assert not any(closed_by_peer(sock) for sock in idle[30:])
        assert (await asyncio.to_thread(get, port))[0] == 200
        assert len(guard.open) <= 20
        for sock in idle:
            sock.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused_and_the_busy_finish() -> None:
    release = asyncio.Event()
    guard = ConnectionGuard(cap=16, head_timeout_s=0.5, socket_cap=10)
    async with site(guard, release) as port:
        busy = [asyncio.create_task(fetch(port, "/wait")) for _ in range(16)]
        await eventually_async(lambda: _true(sum(t.active for t in guard.open.values()) == 16), 10, "16 busy")
        await asyncio.sleep(1.5)  # past the head timeout: a running request is never cut off
        late = raw(port, 1)[0]
        await eventually_async(lambda: _true(closed_by_peer(late)), 10, "the 17th closed")
        assert guard.counts.refused == 1 and guard.counts.slow == 0
        release.set()
        assert [head.split(b" ")[1] for head in await asyncio.gather(*busy)] == [b"200"] * 16
        late.close()


async def test_a_kept_alive_connection_is_left_to_aiohttp_and_still_works() -> None:
    guard = ConnectionGuard(cap=16, head_timeout_s=0.3, socket_cap=10)
    async with site(guard) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(2):  # the second request after the head timeout on an idle kept-alive connection
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                         .split(b":")[1])
            assert head.startswith(b"HTTP/1.1 200") and json.loads(await reader.readexactly(length)) == {"ok": True}
            await asyncio.sleep(1.0)
        assert guard.counts.slow == 0
        writer.close()


@pytest.mark.slow
async def test_ten_thousand_idle_connections_leave_the_api_serving(
        config: ApplianceConfig, services: Callable[..., Awaitable[Peers]], tmp_path: Path) -> None:
    """The api process on its defaults (api.max_connections 4096, request_head_timeout_s 10): 10,000
    connections that send nothing. They are closed, as slow or to make room; health answers
    throughout and counts them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 10_000 + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the descriptor hard limit here is {hard}; 10,000 connections need {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    peers = await services("store", "api")
    port = config.api.port
    idle: list[socket.socket] = []
    try:
        for _ in range(10):
            idle += await asyncio.to_thread(raw, port, 1000)
            status, body = await asyncio.to_thread(get, port, "/api/v1/health")
            assert status == 200 and json.loads(body)["services"]["api"] == "ready", body
        detail = (await peers.api.call(HEALTH)).detail
        # Silent connections go as slow after the head timeout, or as the longest idle when the cap is met.
        counted = re.search(r"connections (\d+) open of 4096; closed (\d+) slow to send a request, (\d+) idle for "
                            r"a new one, 0 refused", detail)
        assert counted is not None, detail
        still_open, slow, evicted = (int(n) for n in counted.groups())
        assert still_open <= 4096 and still_open + slow + evicted >= 10_000, detail  # each one open or counted
        eventually(lambda: sum(closed_by_peer(s) for s in idle[:5000]) == 5000, 30, "the oldest 5,000 closed")
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_control_sockets_past_the_cap_are_answered_503(config: ApplianceConfig,
                                                             services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    guard = ConnectionGuard(cap=64, head_timeout_s=10.0, socket_cap=3)
    async with api_client(config, peers, guard=guard) as (client, dispatcher):
        admin = bearer(dispatcher, Role.ADMIN)
        first = [await client.ws_connect("/control", headers=admin) for _ in range(3)]
        for ws in first:
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/control", headers=admin)
        assert refused.value.status == 503
        reply = await client.get("/control", headers=admin)  # the same refusal, readable: what and why
        assert reply.status == 503 and "api.websocket.max_clients" in (await reply.json())["error"]["message"]
        assert guard.counts.sockets_refused == 2 and "/control sockets 3 open of 3, 2 refused" in str(guard.summary())
        await first[0].close()
        await eventually_async(lambda: _true(guard.sockets == 2), 10, "the closed socket's place freed")
        again = await client.ws_connect("/control", headers=admin)
        assert (await again.receive_json(timeout=10))["type"] == "ready"
        for ws in (*first[1:], again):
            await ws.close()


def upgrades(port: int, count: int, headers: dict[str, str], source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` /control upgrade requests from ``source`` that never read a byte of the answer."""
    head = ("GET /control HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n").encode()
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        sock.sendall(head)
        opened.append(sock)
    return opened


async def test_one_user_or_one_address_cannot_take_every_control_socket(
        config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    """Per user (api.websocket.max_clients_per_user) and per address before authentication
    (max_unauthenticated_per_address): past either, that party is refused and counted, and everyone
    else still gets in."""
    peers = await services("store")
    guard = ConnectionGuard(cap=64, head_timeout_s=10.0, socket_cap=10, socket_cap_per_user=2,
                            unauthenticated_cap_per_address=2)
    async with api_client(config, peers, guard=guard, websocket=config.api.websocket.model_copy(
            update={"auth_timeout_s": 2.0})) as (client, dispatcher):
        mallory = bearer(dispatcher, Role.VIEWER, "mallory")
        held = [await client.ws_connect("/control", headers=mallory) for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/control", headers=mallory)
        assert refused.value.status == 429
        reply = await client.get("/control", headers=mallory)  # readable: what and why, and when to retry
        assert reply.status == 429 and "max_clients_per_user" in (await reply.json())["error"]["message"]
        assert reply.headers["Retry-After"] == "30"
        token = mallory["Authorization"].removeprefix("Bearer ")
        by_frame = await client.ws_connect("/control")  # a browser: the same user, by its first frame
        await by_frame.send_json({"type": "auth", "token": token})
        closed = await by_frame.receive(timeout=10)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4429, closed
        await eventually_async(lambda: _true(not guard.unauthenticated), 10, "the refused socket's place freed")
        # Two sockets that never authenticate fill this address's share; a third is refused before the upgrade.
        silent = [await client.ws_connect("/control") for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/control")
        assert refused.value.status == 503
        # Someone else, meanwhile: in, and served.
        ada = await client.ws_connect("/control", headers=bearer(dispatcher, Role.ADMIN, "ada"))
        assert (await ada.receive_json(timeout=10))["type"] == "ready"
        c = guard.counts
        assert (c.sockets_refused_user, c.sockets_refused_address) == (3, 1), c
        assert "refused 1 for their address and 3 for their user" in str(guard.summary())
        for ws in silent:  # closed by the auth timeout, and their places freed
            assert (await ws.receive(timeout=10)).data == 4401
        await eventually_async(lambda: _true(not guard.unauthenticated), 10, "the address's places freed")
        for ws in (*held, ada):
            await ws.close()
        await eventually_async(lambda: _true(guard.sockets == 0 and not guard.by_user), 10, "every place freed")


@pytest.mark.slow
async def test_two_thousand_sockets_that_never_read_leave_room_for_others(
        config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]) -> None:
    """Issue 26's bad input at its scale, on the default limits: 2,000 upgrades with one user's
    (stolen) token and 2,000 with none, from two addresses, none of which ever reads. Each is
    refused or held within its share, counted; another user connects and is served meanwhile; and
    the box closes the ones it held by itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * 4_000 + 1024  # both ends of each socket live in this process
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the descriptor hard limit here is {hard}; this needs {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    limits = config.api.websocket
    peers = await services("store")
    guard = ConnectionGuard(cap=config.api.max_connections, head_timeout_s=config.api.request_head_timeout_s,
                            socket_cap=limits.max_clients, socket_cap_per_user=limits.max_clients_per_user,
                            unauthenticated_cap_per_address=limits.max_unauthenticated_per_address)
    opened: list[socket.socket] = []
    try:
        async with api_client(config, peers, guard=guard) as (client, dispatcher):
            port = client.port
            assert port is not None
            stolen = bearer(dispatcher, Role.VIEWER, "mallory")
            opened += await asyncio.to_thread(upgrades, port, 2000, stolen, "127.0.0.2")
            opened += await asyncio.to_thread(upgrades, port, 2000, {}, "127.0.0.3")
            c = guard.counts
            await eventually_async(lambda: _true(c.sockets_refused_user + c.sockets_refused_address
                                                 >= 4000 - limits.max_clients_per_user
                                                 - limits.max_unauthenticated_per_address), 120,
                                   "every upgrade past its share refused")
            assert guard.by_user["mallory"] == limits.max_clients_per_user
            assert guard.sockets <= limits.max_clients_per_user + limits.max_unauthenticated_per_address
            ada = await client.ws_connect("/control", headers=bearer(dispatcher, Role.ADMIN, "ada"))
            assert (await ada.receive_json(timeout=30))["type"] == "ready"
            await ada.send_json({"id": 1, "command": "system.health"})
            assert (await ada.receive_json(timeout=30))["type"] == "result"
            print(f"\n2,000 + 2,000 silent upgrades: {guard.by_user['mallory']} held by the stolen token, "
                  f"{c.sockets_refused_user} refused for its user, {c.sockets_refused_address} refused for their "
                  f"address; {guard.summary()!s}")
            await ada.close()
            # Those held, never reading: closed by the auth timeout, or by a ping with no pong (heartbeat_s).
            await eventually_async(lambda: _true(guard.sockets == 0), 3 * limits.heartbeat_s + 30,
                                   "the silent sockets closed by the box")
    finally:
        for sock in opened:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
