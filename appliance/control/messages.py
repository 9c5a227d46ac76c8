"""messages.broadcast: a notice, an alert or a chat line to everyone watching over the WebSocket
(the api's ``messages`` topic). Nothing is kept: who is not connected does not get it (alerts
that must arrive also go to MQTT and the outbox: agent/actions.py)."""

from __future__ import annotations

from typing import Any

from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, command
from appliance.protocol.common import Changed
from appliance.protocol.messages import API_BROADCAST, Broadcast


async def broadcast(ctx: Context, request: Broadcast) -> Changed:
    signed = request.model_copy(update={"sender": ctx.caller.subject[:128]})  # never what the body claims
    return await ctx.peers.api.call(API_BROADCAST, signed, timeout_s=5.0)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("messages.broadcast", "Send a notice, alert or chat line to every WebSocket subscribed to messages.",
            Broadcast, Changed, Permission.OPERATOR, broadcast, effect=Effect.EXTERNAL, tags=("messages",),
            audit=lambda request, reply: {"kind": request.kind, "sockets": reply.changed if reply else None}),
)
