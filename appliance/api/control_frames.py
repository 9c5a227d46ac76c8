"""The frames of WebSocket /control, declared once: the server builds what it sends from these, and
their JSON schemas (docs/control-frames.schema.json, checked by a test) are what clients code to.

``id`` is the client's own (a string or integer) and comes back on every frame a request causes.
Task events carry the task's id and the seq of its step log, which is what ``resume`` takes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from appliance.control.tasks import TaskCreate
from appliance.phrases import PhraseWire
from appliance.protocol.common import Message

ClientId = str | int | None
ID = Field(None, description="the client's id of the request this answers (a string or integer)")


# Client to server.
class AuthFrame(Message):
    """The first frame of a browser (which cannot set an Authorization header); later, a fresh token
    of the same user and role, which the socket then lives on under (answered by a ready frame)."""

    id: ClientId = ID
    type: Literal["auth"]
    token: str = Field(max_length=4096)


class PingFrame(Message):
    id: ClientId = ID
    type: Literal["ping"]


class CommandFrame(Message):
    """Any command of the table (the same roles as REST): its reply, or its stream, comes back."""

    id: ClientId = ID
    command: str = Field(max_length=80, description="a command's name, e.g. memory.search")
    args: dict[str, Any] = Field(default_factory=dict, description="the command's request (its REST body)")


class TaskFrame(TaskCreate):
    """The reference form, e.g. {"command": "search", "query": ..., "output_path": ...}: a task is
    created and followed until it ends."""

    id: ClientId = ID


class ResumeFrame(Message):
    """After a reconnect: every event of the task after seq ``after``, then the live stream."""

    id: ClientId = ID
    type: Literal["resume"]
    task: int = Field(ge=1)
    after: int = Field(0, ge=0, description="the seq of the last event received")


class SubscribeFrame(Message):
    """Events of these topics from now on: services, status, metrics, tasks, devices, audit (admin), messages."""

    id: ClientId = ID
    type: Literal["subscribe", "unsubscribe"]
    topics: list[str] = Field(min_length=1, max_length=8)


# Server to client.
class ReadyFrame(Message):
    """Sent once authenticated, and again (with the auth frame's id) when a fresh token is taken."""

    id: ClientId = ID
    type: Literal["ready"] = "ready"
    user: str
    role: str | None
    expires_at: float | None = Field(description="when the token ends (the socket closes with 4401 then)")


class PongFrame(Message):
    id: ClientId = ID
    type: Literal["pong"] = "pong"


class ResultFrame(Message):
    """A command's reply; or, with task and seq, the task's result (the last event of a task)."""

    id: ClientId = ID
    type: Literal["result"] = "result"
    content: Any = None
    task: int | None = None
    seq: int | None = None


class ItemFrame(Message):
    id: ClientId = ID
    type: Literal["item"] = "item"
    content: Any = None


class TokenFrame(Message):
    id: ClientId = ID
    type: Literal["token"] = "token"
    text: str


class TaskCreatedFrame(Message):
    id: ClientId = ID
    type: Literal["task"] = "task"
    task: int
    state: str


class StepFrame(Message):
    id: ClientId = ID
    type: Literal["step"] = "step"
    task: int
    seq: int
    message: str
    data: Any = None


class ProgressFrame(Message):
    id: ClientId = ID
    type: Literal["progress"] = "progress"
    task: int
    seq: int
    percent: float
    message: str


class SubscribedFrame(Message):
    id: ClientId = ID
    type: Literal["subscribed"] = "subscribed"
    topics: list[str] = Field(description="every topic this socket is subscribed to now")


class EventFrame(Message):
    """A topic's news: at first its whole state (snapshot), then what changed (the changed rows of
    a list, the new services' states, each second's metrics)."""

    type: Literal["event"] = "event"
    topic: str
    content: Any = None
    snapshot: bool = False
    at: float = Field(0.0, description="when the box read it (unix time): the x of a live chart")


class Problem(Message):
    field: str | None = Field(description="the request field at fault (dotted path); null for a rule across fields")
    message: str
    phrase: PhraseWire | None = Field(None, description="the message by code (appliance/phrases)")


class ErrorFrame(Message):
    """A refused request, or (with task and seq) how a task ended: code failed, cancelled or timed_out.
    An invalid request lists every field at fault in ``problems``."""

    id: ClientId = ID
    type: Literal["error"] = "error"
    code: str
    message: str
    field: str | None = None
    retry_after: float | None = None
    problems: list[Problem] | None = None
    phrase: PhraseWire | None = Field(None, description="the message by code (appliance/phrases), for the "
                                                        "client's own language")
    task: int | None = None
    seq: int | None = None


CLIENT_FRAMES: tuple[type[Message], ...] = (AuthFrame, PingFrame, CommandFrame, TaskFrame, ResumeFrame,
                                            SubscribeFrame)
SERVER_FRAMES: tuple[type[Message], ...] = (ReadyFrame, PongFrame, ResultFrame, ItemFrame, TokenFrame,
                                            TaskCreatedFrame, StepFrame, ProgressFrame, SubscribedFrame, EventFrame,
                                            ErrorFrame)


def frame_schemas() -> dict[str, Any]:
    """One JSON schema per frame type, by direction and name."""
    return {direction: {model.__name__: model.model_json_schema() for model in models}
            for direction, models in (("client", CLIENT_FRAMES), ("server", SERVER_FRAMES))}
