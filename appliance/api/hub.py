"""Subscriptions of /control: one poller per topic for the whole api process, its changes fanned
out to every socket subscribed, so 500 dashboards cost the services what one does.

A topic is a command read on a period as the hub's own caller; a socket may subscribe to it
only if its own role may run that command (so audit events are an admin's alone). A new
subscriber gets the topic's current state at once, then only what changed: the services' states
when one changes, metrics every second, and the task, device and audit rows that are new or
changed since the last read. A topic whose command has a list owner rule (tasks: others' rows
reduced to their state) is shaped per subscriber by that same rule, so what a socket is sent is
exactly what that caller's own tasks.list would answer. A poller runs only while its topic has
subscribers. The
``messages`` topic is pushed, not read: messages.broadcast (through the api's IPC endpoint)
hands each message to whoever is subscribed at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.api.control_frames import EventFrame
from appliance.control.caller import Caller, Role
from appliance.control.command import OwnRows
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.topics import TOPICS, Topic
from appliance.protocol.common import Message

Send = Callable[[Message], None]
HUB = Caller("api:subscriptions", Role.ADMIN, "websocket")


class Feed:
    """One topic's poller and subscribers."""

    def __init__(self, name: str, topic: Topic, dispatcher: Dispatcher, log: logging.Logger) -> None:
        self.name, self.topic, self.dispatcher, self.log = name, topic, dispatcher, log
        self.command = dispatcher.table.get(topic.command)
        rule = self.command.owner if self.command is not None else None
        self.rule = rule if isinstance(rule, OwnRows) else None
        self.subscribers: dict[int, tuple[Send, Caller]] = {}
        self.state: Any = None  # the last content read
        self.read_at = 0.0
        self.versions: dict[Any, tuple[Any, ...]] = {}
        self.task: asyncio.Task[None] | None = None
        self.snapshots: set[asyncio.Task[None]] = set()

    def add(self, ident: int, send: Send, caller: Caller) -> None:
        self.subscribers[ident] = (send, caller)
        if self.topic.snapshot:
            task = asyncio.create_task(self._snapshot(ident, send, caller))
            self.snapshots.add(task)
            task.add_done_callback(self.snapshots.discard)
            return
        if self.state is not None:
            send(EventFrame(topic=self.name, content=self._for(caller, self.state, {}), snapshot=True,
                            at=self.read_at))
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
        if changed is None:
            return
        frame = EventFrame(topic=self.name, content=changed, snapshot=first, at=self.read_at)
        shaped: dict[str, Any] = {}  # one shaping per subject, however many sockets it has
        for send, caller in list(self.subscribers.values()):
            content = self._for(caller, changed, shaped)
            send(frame if content is changed else frame.model_copy(update={"content": content}))

    def _for(self, caller: Caller, content: Any, cache: dict[str, Any]) -> Any:
        """The content as this caller may see it (the command's list owner rule, if any)."""
        if self.rule is None or self.command is None or not self.rule.applies(caller):
            return content
        if caller.subject not in cache:
            reply = self.command.response.model_validate(content)
            cache[caller.subject] = self.rule.shape(caller, reply).model_dump(mode="json")
        return cache[caller.subject]

    async def _snapshot(self, ident: int, send: Send, caller: Caller) -> None:
        """A pushed topic's whole state for one new subscriber, read as that subscriber."""
        try:
            reply = await self.dispatcher.call(self.topic.command, self.topic.args, caller)
        except CommandError as exc:
            self.log.debug("subscription %s: no snapshot: %s", self.name, exc)
            return
        if ident in self.subscribers:
            send(EventFrame(topic=self.name, content=reply.model_dump(mode="json"), snapshot=True, at=time.time()))

    def push(self, content: Any) -> int:
        """A pushed topic's event to every subscriber now; how many got it."""
        frame = EventFrame(topic=self.name, content=content, at=time.time())
        for send, _caller in list(self.subscribers.values()):
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

    def subscribe(self, ident: int, topics: list[str], send: Send, caller: Caller) -> None:
        for name in topics:
            self.feeds[name].add(ident, send, caller)

    def broadcast(self, message: Message) -> int:
        return self.feeds["messages"].push(message.model_dump(mode="json"))

    async def unsubscribe(self, ident: int, topics: list[str] | None = None) -> None:
        for name in topics or list(self.feeds):
            await self.feeds[name].remove(ident)
