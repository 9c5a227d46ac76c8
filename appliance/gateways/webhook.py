"""The webhook gateway: outbound only. Each message is a JSON POST to mqtt.uplink.webhook, queued in
the store's outbox, so it survives restarts and is retried with backoff until the endpoint takes
it (appliance/mqtt/uplink.py delivers, in order). A platform that calls back with replies would
add an inbound route of its own and call ``deliver``."""

from __future__ import annotations

import time

from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.gateways import ChatGateway


class WebhookGateway(ChatGateway):
    platform = "webhook"

    def __init__(self, commands: Dispatcher, caller: Caller, topic: str = "chat") -> None:
        super().__init__()
        self.commands, self.caller, self.topic = commands, caller, topic

    async def connect(self) -> None:
        """Nothing to receive: the outbox delivers whenever the network is up."""

    async def send_message(self, conversation: str, content: str) -> None:
        await self.commands.call("outbox.enqueue", {"target": "webhook", "topic": self.topic, "payload": {
            "conversation": conversation, "text": content, "at": time.time()}}, self.caller)
