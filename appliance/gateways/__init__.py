"""Chat gateways: one small interface for every place people talk to the agent from; in the
reference design's words connect(platform), sendMessage(content), registerHandler(handler).

A gateway brings messages in (its adapter calls ``deliver`` with an InboundMessage, which runs
the registered handler and sends the handler's reply back the same way) and sends notices out
(``send_message``). The handler the appliance registers is ``agent_reply``: the message goes to
the `chat` command (memories recalled and cited) as the gateway's caller, in a conversation of
its own per platform and sender, so the ring keeps each chat's turns apart.

Adapters: MQTT (appliance/mqtt/chat.py: a topic pair); webhook (webhook.py: outbound only, the
notify.send command's webhook transport: a JSON POST to mqtt.uplink.webhook, retried through the
outbox); WebSocket (the api: in is the chat
command over /control, out the ``messages`` topic). A cloud chat platform is one more subclass:
docs/gateways.md says how.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from appliance.control.caller import Caller
from appliance.control.chat import NO_REPLY, chat_reply
from appliance.control.dispatcher import Dispatcher


@dataclass(frozen=True)
class InboundMessage:
    platform: str
    conversation: str  # the platform's own thread or chat id
    sender: str
    text: str


Handler = Callable[[InboundMessage], Awaitable[str]]


class ChatGateway(abc.ABC):
    platform: ClassVar[str]

    def __init__(self) -> None:
        self._handler: Handler | None = None

    def register_handler(self, handler: Handler) -> None:
        self._handler = handler

    @abc.abstractmethod
    async def connect(self) -> None:
        """Start receiving (log in, subscribe); safe to call again after the platform dropped us."""

    @abc.abstractmethod
    async def send_message(self, conversation: str, content: str) -> None:
        """Send ``content`` into ``conversation`` on the platform."""

    async def deliver(self, message: InboundMessage) -> None:
        """What came in: the handler's answer goes back into the same conversation."""
        if self._handler is None:
            raise RuntimeError(f"{self.platform}: a message came in before a handler was registered")
        if reply := await self._handler(message):
            await self.send_message(message.conversation, reply)


def conversation_id(message: InboundMessage) -> str:
    """A ring conversation per platform, thread and sender (letters, digits, _ . - only; 64 at most)."""
    raw = f"{message.platform}-{message.conversation}-{message.sender}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:64]


AGENT_PREFIX = "/agent "
AGENT_WAIT_S = 300.0


def agent_reply(dispatcher: Dispatcher, caller: Caller, *, max_tokens: int = 256) -> Handler:
    """The agent answers: the `chat` command, as ``caller``, remembering the conversation; a message
    that starts with ``/agent`` is a goal instead: an agent task (with the gateway's role), whose
    answer comes back when it ends."""

    async def reply(message: InboundMessage) -> str:
        if message.text.startswith(AGENT_PREFIX) and message.text[len(AGENT_PREFIX):].strip():
            return await _goal(dispatcher, caller, message.text[len(AGENT_PREFIX):].strip())
        request = {"message": message.text, "conversation": conversation_id(message), "max_tokens": max_tokens}
        answer = (await chat_reply(dispatcher, request, caller)).with_sources()
        # Silence on a chat platform reads as "the box is down": say that the model had nothing.
        return answer if answer.strip() else NO_REPLY

    return reply


async def _goal(dispatcher: Dispatcher, caller: Caller, goal: str) -> str:
    task = await dispatcher.call("tasks.create", {"kind": "agent", "goal": goal[:2000]}, caller)
    ident = getattr(task, "id", 0)
    deadline = asyncio.get_running_loop().time() + AGENT_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        row = getattr(await dispatcher.call("tasks.get", {"id": ident, "steps": 0}, caller), "task", None)
        state = getattr(getattr(row, "state", None), "value", "")
        if state == "succeeded":
            result = getattr(row, "result", None)
            return str(result.get("answer") if isinstance(result, dict) else result)
        if state in ("failed", "cancelled", "timed_out", "waiting_approval"):
            return f"task {ident} {state.replace('_', ' ')}: {getattr(row, 'error', '')}"
        await asyncio.sleep(1.0)
    return f"task {ident} is still running; see it on the admin page"
