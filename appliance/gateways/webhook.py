"""The webhook gateway: outbound only. Each message goes out through notify.send's webhook transport
(a JSON POST to mqtt.uplink.webhook, queued in the store's outbox, so it survives restarts and is
retried with backoff until the endpoint takes it: appliance/mqtt/uplink.py delivers, in order). A
platform that calls back with replies would add an inbound route of its own and call ``deliver``."""

from __future__ import annotations

from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.gateways import ChatGateway


class WebhookGateway(ChatGateway):
    platform = "webhook"

    def __init__(self, dispatcher: Dispatcher, caller: Caller) -> None:
        super().__init__()
        self.dispatcher, self.caller = dispatcher, caller

    async def connect(self) -> None:
        """Nothing to receive: the outbox delivers whenever the network is up."""

    async def send_message(self, conversation: str, content: str) -> None:
        await self.dispatcher.call("notify.send", {"text": content[:4000], "kind": "chat", "to": ["webhook"],
                                                   "conversation": conversation[:128]}, self.caller)
