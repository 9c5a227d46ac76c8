"""notify.send: the one way anything tells people or systems something, over every transport at once.

Used by the send_alert action, notify tasks, chat gateways (the webhook's outbound half) and the
agent. Transports, each one adapter below:

- ``site``: a JSON message on the site's MQTT broker (QoS 1), on ``topic`` or agent.alert_topic;
- ``websocket``: every /control socket subscribed to ``messages`` (the admin page, the phone app);
- ``uplink``: the outbox, to the upstream MQTT broker (mqtt.uplink.mqtt), retried until delivered;
- ``webhook``: the outbox, to the HTTPS webhook (mqtt.uplink.webhook): the webhook chat gateway.

``to`` picks transports; by default every one this box has: site and websocket always, uplink and
webhook when configured. Asking for one that is not configured is refused before anything is sent.
The reply says what each transport did; ``reached`` is false only when none took the message.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field, JsonValue

from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, Tool, command
from appliance.control.errors import CommandError
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import Message
from appliance.protocol.devices import MQTT_PUBLISH, STORE_OUTBOX_ADD, OutboxIn, Publish
from appliance.protocol.messages import API_BROADCAST, Broadcast

Transport = Literal["site", "websocket", "uplink", "webhook"]
TRANSPORTS: tuple[Transport, ...] = ("site", "websocket", "uplink", "webhook")


class NotifyRequest(Message):
    text: str = Field(min_length=1, max_length=4000, description="what people read")
    kind: Literal["notice", "alert", "chat"] = "notice"
    to: list[Transport] | None = Field(None, min_length=1, max_length=4,
                                       description="transports to use; default every one configured")
    topic: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^#+\x00]+$",
                              description="site: the MQTT topic (default agent.alert_topic)")
    conversation: str | None = Field(None, max_length=128, description="a chat's conversation, to thread replies")
    data: JsonValue = Field(None, description="more for programs (a task's id, the failure it reports)")


class NotifyResult(Message):
    sent: dict[str, JsonValue] = Field(description="per transport that took it: what it said (mid, sockets, id)")
    failed: dict[str, str] = Field(description="per transport that did not: why")
    reached: bool = Field(description="at least one transport took it")


Adapter = Callable[[Context, NotifyRequest, dict[str, JsonValue]], Awaitable[JsonValue]]


async def _site(ctx: Context, request: NotifyRequest, payload: dict[str, JsonValue]) -> JsonValue:
    topic = request.topic or ctx.config.agent.alert_topic
    published = await ctx.peers.mqtt.call(MQTT_PUBLISH, Publish(topic=topic, payload=payload))
    return {"topic": published.topic, "mid": published.mid}


async def _websocket(ctx: Context, request: NotifyRequest, payload: dict[str, JsonValue]) -> JsonValue:
    message = Broadcast(kind=request.kind, text=request.text, sender=ctx.caller.subject[:128],
                        conversation=request.conversation, data=payload)
    reached = (await ctx.peers.api.call(API_BROADCAST, message, timeout_s=5.0)).changed
    if not reached:
        raise CommandError("unavailable", Phrase("notify.nobody_subscribed"))
    return reached


def _outbox(target: Literal["mqtt", "webhook"]) -> Adapter:
    async def send(ctx: Context, request: NotifyRequest, payload: dict[str, JsonValue]) -> JsonValue:
        topic = "chat" if request.kind == "chat" else "alerts" if request.kind == "alert" else "notices"
        item = await ctx.peers.store.call(STORE_OUTBOX_ADD, OutboxIn(target=target, topic=topic, payload=payload))
        return {"outbox": item.id}

    return send


ADAPTERS: dict[Transport, Adapter] = {"site": _site, "websocket": _websocket, "uplink": _outbox("mqtt"),
                                      "webhook": _outbox("webhook")}


def configured(ctx: Context) -> list[Transport]:
    uplink = ctx.config.mqtt.uplink
    present = {"site": True, "websocket": True, "uplink": uplink.mqtt is not None,
            "webhook": uplink.webhook is not None}
    return [name for name in TRANSPORTS if present[name]]


async def send(ctx: Context, request: NotifyRequest) -> NotifyResult:
    available = configured(ctx)
    wanted = list(dict.fromkeys(request.to or available))
    missing = [name for name in wanted if name not in available]
    if missing:
        raise CommandError("conflict", Phrase("notify.target_not_configured", target=missing[0],
                                                  configured=", ".join(available)), field="to")
    payload: dict[str, JsonValue] = {"kind": request.kind, "text": request.text, "by": ctx.caller.subject[:128],
                                     "at": time.time(), "data": request.data}
    if request.conversation:
        payload["conversation"] = request.conversation
    if ctx.caller.task is not None:
        payload["task"] = ctx.caller.task
    sent: dict[str, JsonValue] = {}
    failed: dict[str, str] = {}
    for name in wanted:
        try:
            sent[name] = await ADAPTERS[name](ctx, request, payload)
        except (CommandError, IpcError) as exc:
            failed[name] = str(exc)[:500]
    return NotifyResult(sent=sent, failed=failed, reached=bool(sent))


def _audit(request: NotifyRequest, reply: NotifyResult | None) -> dict[str, Any]:
    return {"kind": request.kind, "to": request.to, **({"sent": sorted(reply.sent)} if reply else {})}


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("notify.send", "Tell people: the site's broker, the WebSocket clients, the uplink and the webhook.",
            NotifyRequest, NotifyResult, Permission.OPERATOR, send, effect=Effect.EXTERNAL,
            http=(HttpRoute("POST", "/api/v1/notify"),), audit=_audit, tags=("messages",),
            tool=Tool("notify", "Send a short message to the site's staff (their phones and the admin page).",
                      ("text", "kind"))),
)
