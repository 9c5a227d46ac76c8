"""IPC over a real Unix socket: typed calls, streams, bad frames, dead peers and timeouts.

The endpoints here are test-only, served by the real IpcServer and called by the real
IpcClient; nothing on the wire is faked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from appliance.ipc import BadRequest, IpcClient, IpcServer, IpcTimeout, NotFound, ServiceDown
from appliance.ipc.sockets import bind_unix_socket, inherited_socket
from appliance.phrases import Phrase, PhraseWire
from appliance.protocol.common import Message, endpoint


class Ping(Message):
    n: int


class Pong(Message):
    n: int


ECHO = endpoint("store", "echo", Ping, Pong)
SLOW = endpoint("store", "slow", Ping, Pong)
COUNT = endpoint("store", "count", Ping, Pong, streaming=True)
FAIL = endpoint("store", "fail", Ping, Pong)


class Harness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream_closed = asyncio.Event()
        self.server = IpcServer("store", max_frame_bytes=4096, log=logging.getLogger("test"))
        self.server.add(ECHO, self.echo)
        self.server.add(SLOW, self.slow)
        self.server.add(FAIL, self.fail)
        self.server.add_stream(COUNT, self.count)

    async def echo(self, ping: Ping) -> Pong:
        return Pong(n=ping.n)

    async def slow(self, ping: Ping) -> Pong:
        await asyncio.sleep(ping.n)
        return Pong(n=ping.n)

    async def fail(self, ping: Ping) -> Pong:
        if ping.n == 2:
            raise NotFound(Phrase("task.not_found", id=ping.n))
        if ping.n:
            raise BadRequest("n must be zero")
        raise RuntimeError("boom")

    async def count(self, ping: Ping) -> AsyncIterator[Pong]:
        try:
            for i in range(ping.n):
                yield Pong(n=i)
                await asyncio.sleep(0.01)
        finally:
            self.stream_closed.set()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Harness, IpcClient]]:
    harness = Harness(tmp_path / "run" / "test.sock")
    await harness.server.start(bind_unix_socket(harness.path))
    client = IpcClient("store", harness.path, timeout_s=2.0)
    yield harness, client
    await client.close()
    await harness.server.stop()


async def raw(path: Path, body: bytes, route: str = "/v1/echo") -> tuple[int, dict[str, object]]:
    async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
                session.post(f"http://test{route}", data=body) as response):
        return response.status, await response.json()


async def test_call_roundtrip_and_socket_is_owner_only(served: tuple[Harness, IpcClient]) -> None:
    harness, client = served
    assert (await client.call(ECHO, Ping(n=7))).n == 7
    assert stat.S_IMODE(harness.path.stat().st_mode) == 0o600


async def test_stream_yields_in_order(served: tuple[Harness, IpcClient]) -> None:
    _, client = served
    assert [p.n async for p in client.stream(COUNT, Ping(n=5))] == [0, 1, 2, 3, 4]


async def test_leaving_a_stream_early_stops_the_producer(served: tuple[Harness, IpcClient]) -> None:
    harness, client = served
    async for pong in client.stream(COUNT, Ping(n=10_000)):
        if pong.n == 3:
            break
    await asyncio.wait_for(harness.stream_closed.wait(), 5)


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{not json", 400, "echo: (top level): Invalid JSON"),
    (b'{"n": "seven"}', 400, "echo: n: Input should be a valid integer"),
    (b'{"n": 1, "extra": 2}', 400, "echo: extra: unknown key"),
    (b"[]", 400, "echo"),
    (b"\xff\xfe\x00", 400, "echo"),
    (b'{"n": ' + b"9" * 5000 + b"}", 413, "exceeds the 4096-byte frame limit"),
])
async def test_bad_frames_get_an_error_reply_and_the_server_stays_up(
        served: tuple[Harness, IpcClient], body: bytes, status: int, fragment: str) -> None:
    harness, client = served
    got_status, reply = await raw(harness.path, body)
    assert got_status == status
    assert fragment in str(reply["error"])
    assert (await client.call(ECHO, Ping(n=1))).n == 1


async def test_errors_travel_typed(served: tuple[Harness, IpcClient]) -> None:
    harness, client = served
    with pytest.raises(BadRequest, match="n must be zero"):
        await client.call(FAIL, Ping(n=1))
    with pytest.raises(Exception, match="internal error"):
        await client.call(FAIL, Ping(n=0))
    status, reply = await raw(harness.path, b"{}", route="/v1/nothing")
    assert status == 404 and "no IPC method" in str(reply)
    with pytest.raises(NotFound):
        await client.call(endpoint("store", "nothing", Ping, Pong), Ping(n=1))


async def test_an_error_keeps_its_phrase_across_the_socket(served: tuple[Harness, IpcClient]) -> None:
    """The English text for logs and the code for the page's words; a plain error has no phrase."""
    _, client = served
    with pytest.raises(NotFound, match=r"store\.fail: no task 2") as caught:
        await client.call(FAIL, Ping(n=2))
    assert caught.value.phrase == PhraseWire(code="task.not_found", args={"id": 2})
    with pytest.raises(BadRequest) as plain:
        await client.call(FAIL, Ping(n=1))
    assert plain.value.phrase is None


@pytest.mark.parametrize("phrase", [{"code": "BAD"}, {"code": "a.b", "args": {"x": [1]}}, "text", 5, []])
async def test_a_malformed_phrase_from_a_peer_is_dropped_not_the_error(tmp_path: Path, phrase: object) -> None:
    """A peer (or anything on the socket) sending a bad phrase: the error and its words still arrive."""
    async def handler(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "not_found", "message": "gone", "phrase": phrase}}, status=404)
    app = web.Application()
    app.router.add_post("/v1/echo", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "odd.sock"
    await web.UnixSite(runner, str(path)).start()
    client = IpcClient("store", path, timeout_s=2.0)
    try:
        with pytest.raises(NotFound, match="gone") as caught:
            await client.call(ECHO, Ping(n=1))
        assert caught.value.phrase is None
    finally:
        await client.close()
        await runner.cleanup()


async def test_timeout_is_a_clear_error(served: tuple[Harness, IpcClient]) -> None:
    _, client = served
    with pytest.raises(IpcTimeout, match=r"store.slow did not answer within 0.2 s"):
        await client.call(SLOW, Ping(n=5), timeout_s=0.2)


async def test_peer_down_fails_fast(tmp_path: Path) -> None:
    client = IpcClient("store", tmp_path / "absent.sock", timeout_s=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceDown, match="store is down: cannot connect"):
        await client.call(ECHO, Ping(n=1))
    assert loop.time() - started < 1.0
    await client.close()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening
    live = bind_unix_socket(path)
    with pytest.raises(RuntimeError, match="already listening"):
        bind_unix_socket(path)
    live.close()


async def test_socket_handed_over_by_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LISTEN_FDS as systemd sets it: the socket arrives as fd 3."""
    listener = bind_unix_socket(tmp_path / "activated.sock")
    saved = os.dup(3) if _fd_open(3) else None
    os.dup2(listener.fileno(), 3)
    try:
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDS", "1")
        sock = inherited_socket()
        assert sock is not None and sock.fileno() == 3
        assert "LISTEN_FDS" not in os.environ
        server = IpcServer("store", 4096, logging.getLogger("test"))
        server.add(ECHO, Harness.echo.__get__(Harness(tmp_path / "x")))
        await server.start(sock, owned=False)
        client = IpcClient("store", tmp_path / "activated.sock")
        assert (await client.call(ECHO, Ping(n=3))).n == 3
        await client.close()
        await server.stop()
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        listener.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_inherited_socket_ignores_other_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert inherited_socket() is None
