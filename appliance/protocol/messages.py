"""Messages for the people watching: the api fans them out to every WebSocket subscribed to the
``messages`` topic (the admin page's notices, the phone app's alerts, the WebSocket chat gateway)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from appliance.protocol.common import Changed, Message, endpoint


class Broadcast(Message):
    kind: Literal["notice", "alert", "chat"] = "notice"
    text: str = Field(min_length=1, max_length=4000)
    sender: str = Field("", max_length=128, description="who sent it: set by the command layer to the caller")
    conversation: str | None = Field(None, max_length=128, description="a chat's conversation, to thread replies")
    data: JsonValue = None


# ``changed``: how many sockets it was queued for (0 when nobody is subscribed: it is not kept).
API_BROADCAST = endpoint("api", "messages/broadcast", Broadcast, Changed)
