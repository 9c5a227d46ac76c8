"""Device commands: the registry, a device's recent events, commands to devices, the quarantine, the outbox."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, JsonValue

from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, Tool, command
from appliance.protocol.common import Empty, Message
from appliance.protocol.devices import (
    DEVICE_ID,
    MQTT_COMMAND,
    MQTT_PUBLISH,
    STORE_DEVICE,
    STORE_DEVICE_EVENTS,
    STORE_DEVICES,
    STORE_OUTBOX_ADD,
    STORE_OUTBOX_STATS,
    STORE_QUARANTINE,
    CommandResult,
    DeviceCommand,
    DeviceEventsQuery,
    DeviceId,
    DevicePage,
    DeviceQuery,
    DeviceRow,
    OutboxIn,
    OutboxItem,
    OutboxStats,
    Publish,
    Published,
    QuarantinePage,
    QuarantineQuery,
)
from appliance.protocol.store import MemoryRecord


class DeviceDetail(Message):
    device: DeviceRow
    recent_events: list[MemoryRecord] = Field(description="newest first")


class DeviceDetailQuery(Message):
    device_id: str = Field(pattern=DEVICE_ID)
    events: int = Field(20, ge=0, le=200, description="how many recent events to include")


class CommandRequest(Message):
    device_id: str = Field(pattern=DEVICE_ID)
    command: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="what the device should do")
    args: dict[str, JsonValue] = Field(default_factory=dict)
    wait_s: float = Field(5.0, ge=0, le=120, description="how long to wait for the device's answer; 0: do not")


async def list_devices(ctx: Context, query: DeviceQuery) -> DevicePage:
    return await ctx.peers.store.call(STORE_DEVICES, query)


async def get_device(ctx: Context, query: DeviceDetailQuery) -> DeviceDetail:
    store = ctx.peers.store
    if query.events == 0:
        row = await store.call(STORE_DEVICE, DeviceId(device_id=query.device_id))
        return DeviceDetail(device=row, recent_events=[])
    row, events = await asyncio.gather(
        store.call(STORE_DEVICE, DeviceId(device_id=query.device_id)),
        store.call(STORE_DEVICE_EVENTS, DeviceEventsQuery(device_id=query.device_id, limit=query.events)))
    return DeviceDetail(device=row, recent_events=events.records)


async def send_command(ctx: Context, request: CommandRequest) -> CommandResult:
    # A device the registry has not seen may still listen: the command goes out either way.
    command_ = DeviceCommand(**request.model_dump(), requested_by=ctx.caller.subject[:128])
    return await ctx.peers.mqtt.call(MQTT_COMMAND, command_, timeout_s=request.wait_s + 15)


async def quarantine(ctx: Context, query: QuarantineQuery) -> QuarantinePage:
    return await ctx.peers.store.call(STORE_QUARANTINE, query)


async def outbox(ctx: Context, _: Empty) -> OutboxStats:
    return await ctx.peers.store.call(STORE_OUTBOX_STATS)


async def publish(ctx: Context, message: Publish) -> Published:
    return await ctx.peers.mqtt.call(MQTT_PUBLISH, message)


async def enqueue(ctx: Context, item: OutboxIn) -> OutboxItem:
    return await ctx.peers.store.call(STORE_OUTBOX_ADD, item)


def _commanded(request: CommandRequest, reply: CommandResult | None) -> dict[str, Any]:
    done = {"correlation_id": reply.correlation_id, "status": reply.status} if reply else {}
    return {"device_id": request.device_id, "command": request.command, **done}


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("devices.list", "The device registry: last seen, event count, availability.", DeviceQuery, DevicePage,
            Permission.VIEWER, list_devices, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/devices"),),
            tags=("devices",),
            tool=Tool("list_devices", "The site's devices: online or not, when last heard from.", ("online", "limit"))),
    command("devices.get", "One device with its recent events.", DeviceDetailQuery, DeviceDetail, Permission.VIEWER,
            get_device, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/devices/{device_id}"),), tags=("devices",),
            tool=Tool("get_device", "One device and its latest events.", ("device_id", "events"))),
    command("devices.command", "Send a device a command (QoS 1) and wait for its answer.", CommandRequest,
            CommandResult, Permission.OPERATOR, send_command, effect=Effect.ACTUATE,
            http=(HttpRoute("POST", "/api/v1/devices/{device_id}/commands"),), audit=_commanded, tags=("devices",),
            tool=Tool("send_device_command", "Send a device a command and wait for its answer.",
                      ("device_id", "command", "args"))),
    command("devices.quarantine", "Messages that could not be events, with the reason, and counts per reason.",
            QuarantineQuery, QuarantinePage, Permission.VIEWER, quarantine, effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/quarantine"),), tags=("devices",)),
    command("outbox.status", "What waits to go upstream, and how old the oldest item is.", Empty, OutboxStats,
            Permission.VIEWER, outbox, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/outbox"),),
            tags=("devices",)),
    command("devices.publish", "Publish a message on the site's broker (QoS 1): alerts and notices.", Publish,
            Published, Permission.OPERATOR, publish, effect=Effect.ACTUATE, surfaces=frozenset({"agent", "cli"}),
            audit=lambda request, _reply: {"topic": request.topic}, tags=("devices",)),
    command("outbox.enqueue", "Queue something to go upstream when the network is up.", OutboxIn, OutboxItem,
            Permission.OPERATOR, enqueue, effect=Effect.EXTERNAL, surfaces=frozenset({"agent", "cli"}),
            audit=lambda request, reply: {"target": request.target, "topic": request.topic,
                                          **({"id": reply.id} if reply else {})}, tags=("devices",)),
)
