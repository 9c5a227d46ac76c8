"""Subscriptions of /control: one poller per topic for the whole api process, its changes fanned
out to every socket subscribed, so 500 dashboards cost the services what one does.

A topic is a command read on a period as the hub's own caller; a socket may subscribe to it
only if its own role may run that command (so audit events are an admin's alone). A new
subscriber gets the topic's current state at once, then only what changed: the services' states
when one changes, metrics every second, and the task, device and audit rows that are new or
changed since the last read. A poller runs only while its topic has subscribers. The
``messages`` topic is pushed, not read: messages.broadcast (through the api's IPC endpoint)
hands each message to whoever is subscribed at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.api.control_frames import EventFrame
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.protocol.common import Message

Send = Callable[[Message], None]
HUB = Caller("api:subscriptions", Role.ADMIN, "websocket")


@dataclass(frozen=True)
class Topic:
    command: str  # what is read (a subscriber's role must allow it); for a pushed topic, what may read it
    every_s: float  # 0: pushed (messages.broadcast), never polled
    args: dict[str, Any] = field(default_factory=dict)
    # For list topics: the key of a row and what tells a changed row from the one seen before.
    key: str | None = None
    version: tuple[str, ...] = ()
    every_read: bool = False  # send each read, changed or not (metrics: a chart's next point)


TOPICS: dict[str, Topic] = {
    "services": Topic("system.health", 2.0),
    # The dashboard's page: services, the model and its plan, CPU, memory, disk, temperatures.
    "status": Topic("system.status", 2.0),
    "metrics": Topic("system.metrics", 1.0, every_read=True),
    "tasks": Topic("tasks.list", 1.0, {"limit": 100}, key="id", version=("updated_at", "progress", "last_seq")),
    "devices": Topic("devices.list", 1.0, {"limit": 500}, key="device_id",
                     version=("last_seen", "online", "event_count")),
    "audit": Topic("audit.list", 1.0, {"limit": 100}, key="id", version=("id",)),
    "messages": Topic("auth.me", 0.0),  # anyone signed in; sent by messages.broadcast, not read
}


class Feed:
    """One topic's poller and subscribers."""

    def __init__(self, name: str, topic: Topic, dispatcher: Dispatcher, log: logging.Logger) -> None:
        self.name, self.topic, self.dispatcher, self.log = name, topic, dispatcher, log
        self.subscribers: dict[int, Send] = {}
        self.state: Any = None  # the last content read
        self.read_at = 0.0
        self.versions: dict[Any, tuple[Any, ...]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, ident: int, send: Send) -> None:
        self.subscribers[ident] = send
        if self.state is not None:
            send(EventFrame(topic=self.name, content=self.state, snapshot=True, at=self.read_at))
        if self.task is None and self.topic.every_s > 0:
            self.task = asyncio.create_task(self.run(), name=f"feed-{self.name}")

    async def remove(self, ident: int) -> None:
        self.subscribers.pop(ident, None)
        if not self.subscribers and self.task is not None:
            task, self.task = self.task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.state, self.versions = None, {}

    async def run(self) -> None:
        while True:
            try:
                reply = await self.dispatcher.call(self.topic.command, self.topic.args, HUB)
                self.publish(reply.model_dump(mode="json"))
            except CommandError as exc:
                self.log.debug("subscription %s: %s", self.name, exc)
            await asyncio.sleep(self.topic.every_s)

    def publish(self, content: dict[str, Any]) -> None:
        first = self.state is None
        if self.topic.key is None:
            changed: Any = content if self.topic.every_read or content != self.state else None
        else:
            rows = content.get("items", [])
            versions = {row[self.topic.key]: tuple(row.get(f) for f in self.topic.version) for row in rows}
            fresh = [row for row in rows if self.versions.get(row[self.topic.key]) != versions[row[self.topic.key]]]
            self.versions.update(versions)
            changed = {"items": fresh} if fresh else None
        self.state, self.read_at = content, time.time()
        if first:
            changed = content
        if changed is not None:
            frame = EventFrame(topic=self.name, content=changed, snapshot=first, at=self.read_at)
            for send in list(self.subscribers.values()):
                send(frame)


    def push(self, content: Any) -> int:
        """A pushed topic's event to every subscriber now; how many got it."""
        frame = EventFrame(topic=self.name, content=content, at=time.time())
        for send in list(self.subscribers.values()):
            send(frame)
        return len(self.subscribers)


class Hub:
    def __init__(self, dispatcher: Dispatcher, log: logging.Logger) -> None:
        self.dispatcher, self.log = dispatcher, log
        self.feeds = {name: Feed(name, topic, dispatcher, log) for name, topic in TOPICS.items()}

    def check(self, topics: list[Any], caller: Caller) -> list[str]:
        """The topics, each one the caller may read; CommandError naming the first that is not."""
        for name in topics:
            if not isinstance(name, str) or name not in TOPICS:
                raise CommandError("bad_request", f"topics: {str(name)[:40]!r} is not one of {', '.join(TOPICS)}",
                                   field="topics")
            self.dispatcher.authorize(self.dispatcher.command(TOPICS[name].command, caller), caller)
        return list(dict.fromkeys(topics))

    def subscribe(self, ident: int, topics: list[str], send: Send) -> None:
        for name in topics:
            self.feeds[name].add(ident, send)

    def broadcast(self, message: Message) -> int:
        return self.feeds["messages"].push(message.model_dump(mode="json"))

    async def unsubscribe(self, ident: int, topics: list[str] | None = None) -> None:
        for name in topics or list(self.feeds):
            await self.feeds[name].remove(ident)
