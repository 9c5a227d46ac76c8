"""WebSocket /control: the command table over one socket, for the phone app and the admin page
(the protocol, frame by frame: docs/control-protocol.md; JSON schemas: control_frames.py).

Checked before the upgrade: the Origin (the page's own, one in api.allowed_origins, or none at
all, as native apps send none; anything else is a 403, so a web page elsewhere cannot drive the
box with its visitor's network position) and an Authorization header when there is one. A
browser, which cannot set that header, authenticates with its first frame within
auth_timeout_s; anything else first closes the socket (4401). The token's expiry closes it too.

What one connection may cost is bounded: frames above max_frame_bytes close it (1009), frames
beyond frames_per_s (with a burst) are dropped unread and answered with one ``busy`` error a
second, at most max_inflight requests run at once, and a reader that lets send_queue frames pile
up is dropped (1013) rather than let memory grow. Every request goes through the dispatcher
with the socket's caller, so roles are exactly those of REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from appliance.api.connections import SocketPlace
from appliance.api.control_frames import (
    AuthFrame,
    CommandFrame,
    ErrorFrame,
    ItemFrame,
    PongFrame,
    ProgressFrame,
    ReadyFrame,
    ResultFrame,
    ResumeFrame,
    StepFrame,
    SubscribedFrame,
    SubscribeFrame,
    TaskCreatedFrame,
    TokenFrame,
)
from appliance.api.hub import Hub
from appliance.config import ApiConfig
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.protocol.common import Message
from appliance.protocol.tasks import FINAL, TaskRow, TaskState
from appliance.taskkinds import KINDS

POLL_S = 0.25  # how often a followed task's log is read (the store is the one record of it)
REVOCATION_CHECK_S = 1.0
AUTH_FAILED, TOO_SLOW, USER_FULL = 4401, 1013, 4429
FrameT = TypeVar("FrameT", bound=Message)


def origin_allowed(request: web.Request, api: ApiConfig) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # native clients; browsers always send one
    if origin in api.allowed_origins:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()  # the admin page's own origin


class Bucket:
    """Token bucket: ``rate`` frames a second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Connection:
    def __init__(self, ws: web.WebSocketResponse, dispatcher: Dispatcher, hub: Hub, api: ApiConfig,
                 caller: Caller) -> None:
        self.ws, self.dispatcher, self.hub, self.caller = ws, dispatcher, hub, caller
        self.topics: set[str] = set()
        self.limits = api.websocket
        self.outbox: asyncio.Queue[Message] = asyncio.Queue(self.limits.send_queue)
        self.bucket = Bucket(self.limits.frames_per_s, self.limits.burst)
        self.running: set[asyncio.Task[None]] = set()
        self.last_busy = 0.0
        self.closing: asyncio.Task[bool] | None = None  # held so the close is not collected half-way

    def send(self, frame: Message) -> None:
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:  # the client does not read: drop it, never buffer without bound
            if self.closing is None:
                self.closing = asyncio.get_running_loop().create_task(
                    self.ws.close(code=TOO_SLOW, message=b"too slow: send queue full"))

    async def writer(self) -> None:
        while True:
            await self.ws.send_str(encode(await self.outbox.get()))

    async def serve(self) -> None:
        writer = asyncio.create_task(self.writer())
        expiry = asyncio.create_task(self._expire()) if self.caller.role is not None else None
        try:
            async for message in self.ws:
                if message.type is WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type is WSMsgType.BINARY and self._admit():
                    self._error(None, CommandError("bad_request", "binary frames are not accepted: send JSON text"))
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            tasks = [writer, *([expiry] if expiry else []), *self.running]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.hub.unsubscribe(id(self))

    async def _expire(self) -> None:
        """Close when the token expires, or as soon as it is revoked or its user disabled (the
        revocation feed is followed every second; checked here as often)."""
        while True:
            if self.caller.expires_at is not None and time.time() >= self.caller.expires_at:
                why = "token expired: connect again with a fresh one"
                break
            if revoked := self.dispatcher.accounts.still_valid(self.caller):
                why = revoked
                break
            await asyncio.sleep(REVOCATION_CHECK_S)
        await self.ws.close(code=AUTH_FAILED, message=why.encode()[:120])

    def _admit(self) -> bool:
        """Whether a frame may be read: within the rate; else it is dropped, said once a second."""
        if self.bucket.take():
            return True
        now = time.monotonic()
        if now - self.last_busy >= 1.0:
            self.last_busy = now
            self._error(None, CommandError("busy", f"more than {self.limits.frames_per_s:g} frames a second: "
                                                   "frames are being dropped", retry_after=1.0))
        return False

    def _on_text(self, text: str) -> None:
        if not self._admit():
            return
        try:
            frame = json.loads(text)
        except ValueError as exc:
            self._error(None, CommandError("bad_request", f"not JSON: {exc}"))
            return
        if not isinstance(frame, dict):
            self._error(None, CommandError("bad_request", "a frame is a JSON object"))
            return
        ident = frame.get("id")
        if ident is not None and not (isinstance(ident, str | int) and not isinstance(ident, bool)
                                      and len(str(ident)) <= 64):
            self._error(None, CommandError("bad_request", "id: a string or integer of at most 64 characters",
                                           field="id"))
            return
        if frame.get("type") == "ping":  # answered at once: no task, nothing to wait for
            self.send(PongFrame(id=ident))
            return
        if len(self.running) >= self.limits.max_inflight:
            self._error(ident, CommandError("busy", f"{self.limits.max_inflight} requests are running on this "
                                                    "connection; wait for one to finish", retry_after=1.0))
            return
        task = asyncio.create_task(self._handle(ident, frame))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _handle(self, ident: Any, frame: dict[str, Any]) -> None:
        try:
            kind = frame.get("type")
            if kind == "resume":
                await self._resume(ident, _frame(ResumeFrame, frame))
            elif kind in ("subscribe", "unsubscribe"):
                await self._subscribe(ident, _frame(SubscribeFrame, frame))
            elif kind == "auth":
                self._reauth(ident, _frame(AuthFrame, frame))
            elif kind is None and isinstance(frame.get("command"), str):
                await self._command(ident, frame)
            else:
                raise CommandError("bad_request", "a frame has a command, or a type of ping, resume, subscribe or "
                                                  "unsubscribe", field="type")
        except CommandError as exc:
            self._error(ident, exc)
        except Exception:  # a fault of ours: the client hears of it, the socket lives on
            self.dispatcher.log.exception("/control: a %s frame failed", frame.get("type") or frame.get("command"))
            self._error(ident, CommandError("internal", "the request failed on the box; see its log"))

    async def _command(self, ident: Any, frame: dict[str, Any]) -> None:
        if frame["command"] in KINDS:  # {"command": "search", "query": ..., "output_path": ...}: a task, followed
            body = {key: value for key, value in frame.items() if key != "id"}
            task = await self.dispatcher.call("tasks.create", body, self.caller)
            assert isinstance(task, TaskRow)
            self.send(TaskCreatedFrame(id=ident, task=task.id, state=task.state.value))
            await self._follow(ident, task.id, 0)
            return
        request = _frame(CommandFrame, frame)
        name, args = request.command, request.args
        command = self.dispatcher.command(name, self.caller)
        if not command.streaming:
            reply = await self.dispatcher.call(name, args, self.caller)
            self.send(ResultFrame(id=ident, content=_json(reply)))
            return
        last = None
        async with contextlib.aclosing(self.dispatcher.stream(name, args, self.caller)) as items:
            async for item in items:
                if getattr(item, "type", None) == "token":  # generation: chat's ChatEvent
                    self.send(TokenFrame(id=ident, text=getattr(item, "text", "")))
                else:
                    last = _json(item)
                    self.send(ItemFrame(id=ident, content=last))
        self.send(ResultFrame(id=ident, content=last))

    def _reauth(self, ident: Any, frame: AuthFrame) -> None:
        """A fresh token for the same user and role (the page refreshed its session): the socket lives
        on under the new token's expiry, so nothing it follows or is subscribed to is lost."""
        fresh = self.dispatcher.accounts.caller(frame.token, "websocket", self.caller.ip)
        if (fresh.subject, fresh.role) != (self.caller.subject, self.caller.role):
            raise CommandError("forbidden", "a token of another user or role cannot take over this connection; "
                                            "open a new one", field="token")
        self.caller = fresh
        self.send(ReadyFrame(id=ident, user=fresh.subject, role=fresh.role.value if fresh.role else None,
                             expires_at=fresh.expires_at))

    async def _subscribe(self, ident: Any, frame: SubscribeFrame) -> None:
        wanted = self.hub.check(list(frame.topics), self.caller)
        if frame.type == "subscribe":
            fresh = [name for name in wanted if name not in self.topics]
            self.topics.update(fresh)
            self.send(SubscribedFrame(id=ident, topics=sorted(self.topics)))
            self.hub.subscribe(id(self), fresh, self.send, self.caller)
        else:
            self.topics.difference_update(wanted)
            await self.hub.unsubscribe(id(self), wanted)
            self.send(SubscribedFrame(id=ident, topics=sorted(self.topics)))

    async def _resume(self, ident: Any, frame: ResumeFrame) -> None:
        await self._follow(ident, frame.task, frame.after)

    async def _follow(self, ident: Any, task_id: int, after: int) -> None:
        """The task's events after ``after`` from its persisted log, then live until it ends: each
        step once, in order, numbered by the task's own seq (so a resumed client misses none). Who may
        follow a task is tasks.get's owner rule, as on every other surface."""
        cursor = after
        while True:
            try:
                detail = await self.dispatcher.call("tasks.get", {"id": task_id, "after_seq": cursor, "steps": 200},
                                                    self.caller)
            except CommandError as exc:
                raise CommandError(exc.code, exc.message, field="task" if exc.field == "id" else exc.field,
                                   phrase=exc.phrase) from None
            task = detail.task  # type: ignore[attr-defined]
            for step in detail.steps:  # type: ignore[attr-defined]
                self.send(_event(ident, task, step.seq, step.message, step.data))
                cursor = step.seq
            if task.state in FINAL and cursor >= task.last_seq:
                return
            await asyncio.sleep(POLL_S)

    def _error(self, ident: Any, exc: CommandError) -> None:
        try:
            frame = ErrorFrame.model_validate({"id": ident, **exc.as_dict()})
        except ValidationError:  # a fault of ours: the request must still be answered, not left waiting
            self.dispatcher.log.exception("/control: the error frame for %r could not be made", exc.code)
            frame = ErrorFrame(id=ident if isinstance(ident, str | int) else None, code="internal",
                               message="the request failed on the box; see its log")
        self.send(frame)


def _frame(model: type[FrameT], frame: dict[str, Any]) -> FrameT:
    """A client frame validated by its declared model (control_frames.py): 400 naming each field at fault."""
    try:
        return model.model_validate_json(json.dumps(frame), strict=True)
    except ValidationError as exc:
        raise CommandError.of(exc) from None


def _event(ident: Any, task: TaskRow, seq: int, message: str, data: Any) -> Message:
    """A step of the task's log as a frame; its final step carries the result or the error."""
    if message in FINAL_MESSAGES and seq == task.last_seq:
        if message == TaskState.SUCCEEDED.value:
            return ResultFrame(id=ident, task=task.id, seq=seq, content=task.result)
        return ErrorFrame(id=ident, task=task.id, seq=seq, code=message, message=task.error, phrase=task.error_phrase)
    if isinstance(data, dict) and isinstance(data.get("percent"), int | float):
        return ProgressFrame(id=ident, task=task.id, seq=seq, percent=data["percent"], message=message)
    return StepFrame(id=ident, task=task.id, seq=seq, message=message, data=data)


def encode(frame: Message) -> str:
    """JSON without the fields a frame does not use, but always with its id and content."""
    data = frame.model_dump(mode="json", exclude_none=True)
    for key in ("id", "content"):
        if key in type(frame).model_fields:
            data.setdefault(key, None)
    return json.dumps(data, ensure_ascii=False)


FINAL_MESSAGES = frozenset(state.value for state in FINAL)


def _json(reply: Any) -> Any:
    return reply.model_dump(mode="json") if isinstance(reply, Message) else reply


async def control_socket(request: web.Request, dispatcher: Dispatcher, hub: Hub, api: ApiConfig,
                         auth_required: bool, header_caller: Caller | None,
                         place: SocketPlace | None) -> web.StreamResponse:
    if not origin_allowed(request, api):
        raise CommandError("forbidden", f"origin {request.headers.get('Origin', '')[:100]!r} may not open "
                                        "/control (api.allowed_origins)")
    limits = api.websocket
    ws = web.WebSocketResponse(heartbeat=limits.heartbeat_s, max_msg_size=limits.max_frame_bytes)
    await ws.prepare(request)
    caller = header_caller
    if caller is None and not auth_required:
        caller = Caller("anonymous", Role.ADMIN, "websocket", request.remote)
    if caller is None:
        caller = await _first_frame_auth(ws, dispatcher, limits.auth_timeout_s, request.remote)
        if caller is None:
            return ws
    if place is not None:
        try:
            place.authenticated(caller.subject)  # a no-op when the header's token took the place
        except CommandError as exc:
            await ws.close(code=USER_FULL, message=exc.message.encode()[:120])
            return ws
    ws_caller = Caller(caller.subject, caller.role, "websocket", caller.ip, caller.token_id, caller.expires_at)
    await ws.send_str(encode(ReadyFrame(user=ws_caller.subject, expires_at=ws_caller.expires_at,
                                        role=ws_caller.role.value if ws_caller.role else None)))
    await Connection(ws, dispatcher, hub, api, ws_caller).serve()
    return ws


async def _first_frame_auth(ws: web.WebSocketResponse, dispatcher: Dispatcher, timeout_s: float,
                            ip: str | None) -> Caller | None:
    """The caller from ``{"type": "auth", "token": ...}`` sent first; else the socket is closed (4401)."""
    why = "authenticate first: {\"type\": \"auth\", \"token\": ...}"
    try:
        message = await ws.receive(timeout=timeout_s)
        frame = json.loads(message.data) if message.type is WSMsgType.TEXT else None
        if isinstance(frame, dict) and frame.get("type") == "auth" and isinstance(frame.get("token"), str):
            return dispatcher.accounts.caller(frame["token"][:4096], "websocket", ip)
    except TimeoutError:
        why = f"no auth frame within {timeout_s:g} s"
    except ValueError:
        pass
    except CommandError as exc:
        why = f"not authenticated: {exc}"
    await ws.close(code=AUTH_FAILED, message=why.encode()[:120])
    return None
