"""What idle, slow and surplus HTTP connections may cost the api: bounded, counted, in health.

aiohttp holds a connection for ever while it sends nothing, and waits for ever for a request head
sent a byte at a time (slowloris); ten thousand of either would use up the api's file descriptors,
and then nobody gets in. The guard sits between the listening socket and aiohttp's handler:

- at most ``api.max_connections`` are open. A new one past that closes the connection idle the
  longest (no request running) to make room, since an idle client reconnects at little cost;
  where every connection is busy the new one is closed instead. Both are counted;
- a connection with no request running must start one within ``api.request_head_timeout_s`` of
  opening, or of sending bytes after its last answer: else it is closed and counted as slow. A
  keep-alive connection that sends nothing is aiohttp's (its keep-alive timeout closes it);
- a request in progress (a long upload, a chat stream, a WebSocket) is never closed here;
- at most ``api.websocket.max_clients`` /control sockets are open; past it a new one is answered
  503 before the upgrade, and counted. (A socket that stops reading is closed by its send queue
  or its missed pongs: api/control_ws.py.) So that one party cannot take every place:
  - one address may have at most ``api.websocket.max_unauthenticated_per_address`` sockets that
    have not authenticated yet (each has auth_timeout_s to do so); past it, 503 before the upgrade;
  - one user (a token's subject) may hold at most ``api.websocket.max_clients_per_user``; past it
    a header-authenticated upgrade is answered 429, a socket that authenticated by frame is closed
    (4429). A stolen token opening thousands of sockets fills its own share, not everyone's.
  Each refusal is counted by its reason.

The api's health detail carries the counts (``summary()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from appliance.control.errors import CommandError
from appliance.phrases import Phrase

SWEEP_S = 0.5
FD_HEADROOM = 256  # descriptors kept for the api's own IPC sockets, files and logs
RETRY_SOCKET_S = 30.0  # what a user told they hold their share of sockets is asked to wait


@dataclass
class Tracked:
    transport: asyncio.BaseTransport
    opened: float
    active: int = 0  # requests running on it
    served: int = 0
    idle_since: float = 0.0  # when its last request ended (or it opened)
    bytes_since_idle: int = 0  # received while no request ran: the head of the next one


@dataclass
class Counts:
    slow: int = 0  # closed: no whole request head in time
    evicted: int = 0  # closed: idle the longest when the cap was reached
    refused: int = 0  # closed at once: the cap was reached and every connection was busy
    sockets_refused: int = 0  # /control upgrades answered 503: api.websocket.max_clients open
    sockets_refused_address: int = 0  # 503: too many sockets from one address not authenticated yet
    sockets_refused_user: int = 0  # 429 or 4429: the user holds max_clients_per_user already


@dataclass
class ConnectionGuard:
    cap: int
    head_timeout_s: float
    socket_cap: int
    socket_cap_per_user: int = 256
    unauthenticated_cap_per_address: int = 64
    clock: Callable[[], float] = time.monotonic
    # By aiohttp's handler (web_protocol.RequestHandler), in the order they last became idle (opened,
    # or a request ended: moved to the end), so the longest idle is the first one not busy.
    open: dict[Any, Tracked] = field(default_factory=dict)
    sockets: int = 0  # /control sockets open
    unauthenticated: Counter[str] = field(default_factory=Counter)  # by address: sockets not authenticated yet
    by_user: Counter[str] = field(default_factory=Counter)  # by subject: sockets authenticated
    counts: Counts = field(default_factory=Counts)
    _sweeper: asyncio.Task[None] | None = None

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """aiohttp's handler factory, each handler watched through a delegating protocol."""
        return lambda: Watched(self, server())

    def admit(self, handler: Any, transport: asyncio.BaseTransport) -> bool:
        """Whether the new connection may stay (room made for it if need be)."""
        now = self.clock()
        if len(self.open) >= self.cap:
            oldest = next((h for h, t in self.open.items() if not t.active), None)
            if oldest is None:
                self.counts.refused += 1
                return False
            self.open.pop(oldest).transport.close()
            self.counts.evicted += 1
        self.open[handler] = Tracked(transport=transport, opened=now, idle_since=now)
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks a connection busy while one of its requests runs."""
        tracked = self.open.get(request.protocol)
        if tracked is None:
            return await handler(request)  # type: ignore[no-any-return]
        tracked.active += 1
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            tracked.active -= 1
            tracked.served += 1
            tracked.idle_since, tracked.bytes_since_idle = self.clock(), 0
            if self.open.pop(request.protocol, None) is not None:  # still open: now the most recently idle
                self.open[request.protocol] = tracked

    @contextlib.contextmanager
    def socket(self, address: str, subject: str | None = None) -> Iterator[SocketPlace]:
        """Hold one of the /control places while the socket is open: ``subject``'s when the upgrade
        carried a token, else ``address``'s until it authenticates. Refused (a CommandError) when
        no place is left, or when that user or that address has its share."""
        if self.sockets >= self.socket_cap:
            self.counts.sockets_refused += 1
            raise CommandError("unavailable", Phrase("api.sockets_full", n=self.sockets))
        if subject is None and self.unauthenticated[address] >= self.unauthenticated_cap_per_address:
            self.counts.sockets_refused_address += 1
            raise CommandError("unavailable", Phrase("api.sockets_unauthenticated", address=address,
                                                     n=self.unauthenticated[address]))
        place = SocketPlace(self, address)
        if subject is not None:
            place.take(subject)
        else:
            self.unauthenticated[address] += 1
        self.sockets += 1
        try:
            yield place
        finally:
            self.sockets -= 1
            if place.subject is None:
                _release(self.unauthenticated, address)
            else:
                _release(self.by_user, place.subject)

    def sweep(self) -> None:
        """Close the connections that did not send a whole request head in time."""
        deadline = self.clock() - self.head_timeout_s
        for handler, tracked in list(self.open.items()):
            waiting_for_head = not tracked.served or tracked.bytes_since_idle > 0
            if not tracked.active and waiting_for_head and tracked.idle_since < deadline:
                del self.open[handler]
                tracked.transport.close()
                self.counts.slow += 1

    def start(self) -> None:
        async def sweeping() -> None:
            while True:
                await asyncio.sleep(SWEEP_S)
                self.sweep()

        self._sweeper = asyncio.create_task(sweeping(), name="connection-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def summary(self) -> Phrase:
        c = self.counts
        return Phrase("api.connections", open=len(self.open), cap=self.cap, slow=c.slow, evicted=c.evicted,
                      refused=c.refused, sockets=self.sockets, socket_cap=self.socket_cap,
                      sockets_refused=c.sockets_refused, refused_address=c.sockets_refused_address,
                      refused_user=c.sockets_refused_user, unauthenticated=sum(self.unauthenticated.values()))


@dataclass
class SocketPlace:
    """One /control socket's place: its address's until it authenticates, then its user's."""

    guard: ConnectionGuard
    address: str
    subject: str | None = None

    def authenticated(self, subject: str) -> None:
        """The socket authenticated by its first frame: the place becomes ``subject``'s (a CommandError,
        busy, when that user holds their share; the place stays the address's until the socket goes)."""
        if self.subject is None:
            self.take(subject)
            _release(self.guard.unauthenticated, self.address)

    def take(self, subject: str) -> None:
        guard = self.guard
        if guard.by_user[subject] >= guard.socket_cap_per_user:
            guard.counts.sockets_refused_user += 1
            raise CommandError("busy", Phrase("api.sockets_per_user", user=subject[:128], n=guard.by_user[subject]),
                               retry_after=RETRY_SOCKET_S)
        guard.by_user[subject] += 1
        self.subject = subject


def _release(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]  # a counter of every address ever seen would grow for ever


class Watched(asyncio.Protocol):
    """One connection: aiohttp's handler does the work, the guard sees it open, receive and close.
    (The handler has __slots__, so it is wrapped rather than given attributes.)"""

    def __init__(self, guard: ConnectionGuard, handler: Any) -> None:
        self.guard, self.handler = guard, handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)
        if not self.guard.admit(self.handler, transport):
            transport.close()

    def data_received(self, data: bytes) -> None:
        if (tracked := self.guard.open.get(self.handler)) is not None and not tracked.active:
            tracked.bytes_since_idle += len(data)
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open.pop(self.handler, None)
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site, with each connection's handler made through the guard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, ssl_context: Any,
                 guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (which closes it at cleanup)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port)


def descriptors_for(cap: int) -> int:
    """Raise the soft descriptor limit toward the hard one so that ``cap`` connections fit; the cap
    that does fit (the configured one, or less where the hard limit is lower, said in health)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = cap + FD_HEADROOM
    if soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, min(cap, soft - FD_HEADROOM))
