"""The chat gateway interface: a gateway delivers what came in to the agent and sends the answer
back; the webhook gateway queues in the real outbox. The in-test platform below is a fake by
necessity (a gateway needs a platform); the agent, the store and the engine behind it are real."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from appliance.config import load_config
from appliance.control.caller import Caller, Role
from appliance.control.chat import NO_REPLY, ChatEvent
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.gateways import ChatGateway, InboundMessage, agent_reply, conversation_id
from appliance.gateways.webhook import WebhookGateway
from appliance.ipc.peers import Peers
from appliance.protocol.store import STORE_RING_READ, RingRead
from tests.helpers import update_config

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]


class Recorder(ChatGateway):
    """A platform that keeps what was sent to it."""

    platform = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    async def connect(self) -> None:
        pass

    async def send_message(self, conversation: str, content: str) -> None:
        self.sent.append((conversation, content))


def test_conversation_ids_are_safe_whatever_the_platform_sends() -> None:
    hostile = InboundMessage("x", "../../etc/passwd;rm -rf /", "a" * 500 + "\x00", "hi")
    made = conversation_id(hostile)
    assert len(made) <= 64 and made.startswith("x-") and all(c.isalnum() or c in "_.-" for c in made)


async def test_what_comes_in_is_answered_by_the_agent(config_file: Path, services: StartServices) -> None:
    peers = await services("store", "engine")
    commands = Dispatcher(default_table(), peers, load_config(config_file), logging.getLogger("test"))
    gateway = Recorder()
    with pytest.raises(RuntimeError, match="before a handler"):
        await gateway.deliver(InboundMessage("recorder", "c1", "ada", "hello"))
    gateway.register_handler(agent_reply(commands, Caller("recorder", Role.VIEWER, "agent"), max_tokens=8))
    await gateway.deliver(InboundMessage("recorder", "c1", "ada", "hello"))
    [(conversation, reply)] = gateway.sent
    assert conversation == "c1" and reply.strip()
    ring = await peers.store.call(STORE_RING_READ, RingRead(conversation="recorder-c1-ada"))
    assert [entry.role for entry in ring.entries] == ["user", "assistant"]  # the chat's own conversation


class SilentModel:
    """A fake dispatcher whose `chat` streams only its end: a model that answered nothing (a tiny
    random model does that on some machines, so the real one cannot pin this case)."""

    async def stream(self, name: str, request: object, caller: Caller) -> AsyncIterator[ChatEvent]:
        assert name == "chat"
        yield ChatEvent(type="done")


async def test_an_empty_answer_is_still_answered() -> None:
    """Silence on a chat platform would read as "the box is down"."""
    gateway = Recorder()
    gateway.register_handler(agent_reply(cast(Dispatcher, SilentModel()), Caller("recorder", Role.VIEWER, "agent")))
    await gateway.deliver(InboundMessage("recorder", "c1", "ada", "hello"))
    assert gateway.sent == [("c1", NO_REPLY)]


async def test_the_webhook_gateway_queues_in_the_outbox(config_file: Path, services: StartServices) -> None:
    config = update_config(config_file, mqtt={"uplink": {"webhook": {"url": "https://hooks.example/chat"}}})
    peers = await services("store")
    commands = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    gateway = WebhookGateway(commands, Caller("agent:gateway", Role.OPERATOR, "agent"))
    await gateway.connect()
    await gateway.send_message("night-shift", "the north gate is open")
    status = (await commands.call("outbox.status", {}, Caller("t", Role.VIEWER, "agent"))).model_dump()
    assert status["pending"] == 1, status
