"""The MQTT chat gateway (mqtt.chat): a line published on in_topic is answered on out_topic.

In: ``{"conversation": "c1", "from": "guard-2", "text": "is the north gate shut?"}``, or plain
text (then conversation and sender are "mqtt"). Out: ``{"conversation", "text", "at"}``, or
``{"conversation", "error"}`` when the message could not be answered (too long, not UTF-8, the
agent failed), so a client never waits for nothing. Anyone who may publish on in_topic talks to
the agent as a viewer: keep the topic on a broker only site staff reach.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.config.mqtt import ChatTopicsConfig
from appliance.gateways import ChatGateway, InboundMessage

Publish = Callable[[str, bytes], Awaitable[None]]


class MqttChat(ChatGateway):
    platform = "mqtt"

    def __init__(self, config: ChatTopicsConfig, publish: Publish, log: logging.Logger) -> None:
        super().__init__()
        self.config, self.publish, self.log = config, publish, log

    async def connect(self) -> None:
        """The mqtt service subscribes in_topic with its other topics on every (re)connection."""

    async def send_message(self, conversation: str, content: str) -> None:
        await self._send({"conversation": conversation, "text": content, "at": time.time()})

    async def on_message(self, payload: bytes) -> None:
        message = self._parse(payload)
        if isinstance(message, str):
            await self._send({"conversation": "mqtt", "error": message})
            return
        try:
            await self.deliver(message)
        except Exception as exc:  # the agent failed: say so on out_topic rather than stay silent
            self.log.warning("chat message from %s not answered: %s", message.sender, exc)
            await self._send({"conversation": message.conversation, "error": f"not answered: {exc}"[:500]})

    def _parse(self, payload: bytes) -> InboundMessage | str:
        """The message, or why it is refused."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "the message is not UTF-8"
        data: Any = None
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                return "the message starts like JSON but is not JSON"
        fields = data if isinstance(data, dict) else {"text": text}
        body = fields.get("text")
        if not isinstance(body, str) or not body.strip():
            return "no text to answer"
        if len(body) > self.config.max_chars:
            return f"the text is longer than {self.config.max_chars} characters"
        conversation, sender = (str(fields.get(key) or "mqtt")[:64] for key in ("conversation", "from"))
        return InboundMessage(self.platform, conversation, sender, body.strip())

    async def _send(self, body: dict[str, Any]) -> None:
        await self.publish(self.config.out_topic, json.dumps(body, ensure_ascii=False).encode())
