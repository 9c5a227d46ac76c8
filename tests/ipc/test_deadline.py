"""A call's deadline travels from the real IpcClient to the handler on the real IpcServer
(ipc/deadline.py); malformed or hostile header values mean "no deadline", never an error."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.ipc import IpcClient, IpcServer
from appliance.ipc import deadline as ipc_deadline
from appliance.ipc.sockets import bind_unix_socket
from appliance.protocol.common import Message, endpoint


class Ask(Message):
    n: int = 0


class Seen(Message):
    remaining_s: float | None


WHEN = endpoint("store", "when", Ask, Seen)


async def when(_: Ask) -> Seen:
    deadline = ipc_deadline.current()
    return Seen(remaining_s=None if deadline is None else deadline - time.monotonic())


@pytest.fixture
async def socket_path(tmp_path: Path) -> AsyncIterator[Path]:
    server = IpcServer("store", max_frame_bytes=4096, log=logging.getLogger("test"))
    server.add(WHEN, when)
    path = tmp_path / "run" / "test.sock"
    await server.start(bind_unix_socket(path))
    yield path
    await server.stop()


async def test_the_handler_sees_how_long_its_caller_waits(socket_path: Path) -> None:
    client = IpcClient("store", socket_path, timeout_s=3.0)
    try:
        seen = (await client.call(WHEN, Ask())).remaining_s
        assert seen is not None and 2.0 < seen <= 3.0
        seen = (await client.call(WHEN, Ask(), timeout_s=0.5)).remaining_s
        assert seen is not None and 0 < seen <= 0.5
    finally:
        await client.close()
    assert ipc_deadline.current() is None  # only inside a request


@pytest.mark.parametrize("value", ["", "soon", "-1", "0", "nan", "inf", "1e300", "86401", "9" * 40, "0x10", " "])
async def test_a_header_that_is_not_a_sane_wait_means_no_deadline(socket_path: Path, value: str) -> None:
    async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session,
                session.post("http://store/v1/when", data=b"{}",
                             headers={ipc_deadline.DEADLINE_HEADER: value}) as response):
        assert response.status == 200
        assert (await response.json())["remaining_s"] is None


def test_parse_header_and_passed() -> None:
    assert ipc_deadline.parse_header("2.5", now=100.0) == 102.5
    assert ipc_deadline.parse_header("86400", now=0.0) == 86400.0
    assert ipc_deadline.parse_header(None) is None
    assert not ipc_deadline.passed(None)
    assert ipc_deadline.passed(time.monotonic() - 0.001)
    assert not ipc_deadline.passed(time.monotonic() + 60)
    assert all(ipc_deadline.parse_header(v) is None for v in ("nan", "-inf", str(math.pi * 1e9)))
