"""Turning a raw MQTT message into a memory, or into a clear reason for refusing it.

Payloads come from devices the appliance does not control, so nothing is trusted: size,
encoding, control characters, JSON depth and the device id in the topic are all checked.
"""

from __future__ import annotations

import json
import re

from pydantic import JsonValue

from appliance.protocol.common import MAX_TEXT_CHARS
from appliance.protocol.store import MemoryIn

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class EventRejected(ValueError):
    """The message cannot become a memory; the text says why."""


def device_of(topic: str) -> str:
    """The device id of ``devices/<id>/...`` topics; other topics are their own source."""
    levels = topic.split("/")
    if len(levels) >= 2 and levels[0] == "devices":
        if not DEVICE_ID.fullmatch(levels[1]):
            raise EventRejected(f"device id {levels[1][:40]!r} in topic is not 1-128 of [A-Za-z0-9._:-]")
        return levels[1]
    return topic[:256]


def parse_event(topic: str, payload: bytes, max_bytes: int) -> MemoryIn:
    if len(payload) > max_bytes:
        raise EventRejected(f"payload of {len(payload)} bytes exceeds mqtt.max_payload_bytes ({max_bytes})")
    if not payload.strip():
        raise EventRejected("empty payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected(f"payload is not UTF-8 (invalid byte at offset {exc.start})") from None
    if bad := _CONTROL.search(text):
        raise EventRejected(f"payload contains control character {bad.group()!r} at offset {bad.start()}")
    if len(text) > MAX_TEXT_CHARS:
        raise EventRejected(f"payload of {len(text)} characters exceeds {MAX_TEXT_CHARS}")
    source = device_of(topic)
    metadata: dict[str, JsonValue] = {"topic": topic[:1024]}
    try:
        metadata["payload"] = json.loads(text)
    except RecursionError:
        raise EventRejected("JSON payload is nested too deeply") from None
    except ValueError:
        pass  # plain text is a perfectly good event
    return MemoryIn(text=text, kind="event", source=source, metadata=metadata)
