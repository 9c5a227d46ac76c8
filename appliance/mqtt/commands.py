"""Commands to devices: published at QoS 1 with a correlation id, the answer awaited with a timeout.

A command goes to mqtt.command_topic (``devices/<id>/commands``) as JSON:

    {"command": "open", "args": {...}, "correlation_id": "3f2a...", "response_topic": "appliance/<client id>/responses"}

with the same response topic and correlation data as MQTT 5 properties. A device answers on the
response topic with any JSON; an MQTT 5 device echoes the correlation data as a property, a
3.1.1 device puts ``"correlation_id"`` in its answer. Either way the answer reaches the caller
that waits for that id; one that comes after the timeout is logged and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.mqtt.link import Incoming, LinkDown, MqttLink
from appliance.protocol.devices import CommandResult, DeviceCommand


class Commander:
    def __init__(self, client_id: str, topic_template: str, log: logging.Logger) -> None:
        self.response_topic = f"appliance/{client_id}/responses"
        self.topic_template = topic_template
        self.log = log
        self._waiting: dict[str, asyncio.Future[Any]] = {}

    async def send(self, link: MqttLink | None, command: DeviceCommand) -> CommandResult:
        if link is None or link.lost.is_set():
            raise LinkDown("not connected to the broker")
        correlation = uuid.uuid4().hex
        topic = self.topic_template.format(device=command.device_id)
        body = {"command": command.command, "args": command.args, "correlation_id": correlation,
                "response_topic": self.response_topic}
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = self.response_topic
        properties.CorrelationData = correlation.encode()
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = answer
        started = time.monotonic()
        try:
            await link.publish(topic, json.dumps(body).encode(), qos=1, properties=properties)
            if command.wait_s == 0:
                return CommandResult(correlation_id=correlation, topic=topic, status="delivered")
            try:
                async with asyncio.timeout(command.wait_s):
                    response = await answer
            except TimeoutError:
                return CommandResult(correlation_id=correlation, topic=topic, status="timed_out")
            return CommandResult(correlation_id=correlation, topic=topic, status="answered", response=response,
                                 latency_ms=round((time.monotonic() - started) * 1000, 1))
        finally:
            self._waiting.pop(correlation, None)

    def on_response(self, message: Incoming) -> None:
        """An answer on the response topic: handed to whoever waits for its correlation id."""
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = message.payload.decode("utf-8", "backslashreplace")[:4096]
        correlation = message.correlation.decode("ascii", "replace") if message.correlation else None
        if correlation is None and isinstance(body, dict):
            correlation = str(body.get("correlation_id", ""))
        waiter = self._waiting.get(correlation or "")
        if waiter is None or waiter.done():
            self.log.info("an answer for no waiting command (%.40s) was dropped", correlation)
            return
        waiter.set_result(body)
