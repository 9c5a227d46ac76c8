"""The payload contract: a raw MQTT message becomes an event, or a quarantine entry saying why not.

Topics are ``<prefix>/<device id>/<kind>`` (the defaults: ``devices/+/events``,
``devices/+/state``): the device id is the second level, the kind the last (``state``, else an
event). A payload is a JSON object with optional ``id``, ``ts``, ``type``, ``value``, ``fields``
and ``unit`` (other keys are kept), or a bare JSON number, boolean or string, which stands for
``{"value": ...}``. docs/mqtt-payload.schema.json states the same as a JSON schema, and
tests/mqtt/test_events.py checks this code against it.

Nothing from a device is trusted: the topic must be UTF-8 and allowed, the payload within
mqtt.max_payload_bytes, UTF-8, JSON, no deeper than mqtt.max_json_depth, and of the contract's
types. Whatever fails goes to the quarantine with the reason, never into memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from appliance.config import MqttConfig
from appliance.protocol.common import MAX_TEXT_CHARS
from appliance.protocol.devices import DEVICE_ID, EventIn, QuarantineIn, QuarantineKind
from appliance.protocol.topics import topic_filter

_DEVICE = re.compile(DEVICE_ID)
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TYPE = re.compile(r"^[A-Za-z0-9._:/-]{1,64}$")
# ISO 8601 as RFC 3339 writes it, with its offset (the same pattern is in the published schema).
ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_ISO_TIME = re.compile(ISO_TIME)
MAX_NODES = 10_000
MAX_TS = 1e11  # year 5138: a unix time, not milliseconds by mistake
SAMPLE_BYTES = 200


class Refused(Exception):
    def __init__(self, kind: QuarantineKind, reason: str, device: str | None = None) -> None:
        super().__init__(reason)
        self.kind: QuarantineKind = kind
        self.reason = reason
        self.device = device


def sample(data: bytes) -> str:
    """The first bytes, printable: unprintable bytes and non-ASCII escaped."""
    return data[:SAMPLE_BYTES].decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii")[:600]


def _depth_and_size(value: Any) -> tuple[int, int]:
    """(nesting depth, number of values) without recursion, so a hostile payload cannot overflow the stack."""
    deepest, nodes = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            break
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest, nodes


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise Refused("schema", "ts: must be unix seconds or an ISO 8601 time, not a boolean")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_TS:
            raise Refused("schema", f"ts: {value} is not unix seconds (0 to {MAX_TS:g})")
        return float(value)
    if isinstance(value, str) and _ISO_TIME.match(value):
        try:
            return datetime.fromisoformat(value.replace("z", "Z")).timestamp()
        except ValueError:
            pass  # a date like February 30th
    raise Refused("schema", f"ts: {str(value)[:40]!r} is neither unix seconds nor an ISO 8601 time with its "
                            "time zone (Z or +hh:mm)")


def _contract(payload: Any) -> tuple[str | None, str, float | None]:
    """(message id, type, ts) of a payload that keeps the contract; Refused otherwise."""
    if payload is None or isinstance(payload, list):
        raise Refused("schema", f"payload must be a JSON object, number, boolean or string, "
                                f"not {'null' if payload is None else 'an array'}")
    if not isinstance(payload, dict):
        if isinstance(payload, str) and len(payload) > 4096:
            raise Refused("schema", "a bare string payload may have at most 4096 characters")
        return None, "", None
    ident = payload.get("id")
    if "id" in payload:
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            raise Refused("schema", "id: must be a string or an integer")
        if isinstance(ident, int) and not 0 <= ident < 2**63:
            raise Refused("schema", "id: an integer id must be 0 to 2**63-1")
        if isinstance(ident, str) and not _MESSAGE_ID.match(ident):
            raise Refused("schema", "id: must be 1-128 of [A-Za-z0-9._:-]")
    kind = payload.get("type", "")
    if not isinstance(kind, str) or (kind and not _TYPE.match(kind)):
        raise Refused("schema", "type: must be 1-64 of [A-Za-z0-9._:/-]")
    if "fields" in payload and not isinstance(payload["fields"], dict):
        raise Refused("schema", "fields: must be an object")
    unit = payload.get("unit")
    if "unit" in payload and (not isinstance(unit, str) or len(unit) > 32):
        raise Refused("schema", "unit: must be a string of at most 32 characters")
    ts = _timestamp(payload["ts"]) if payload.get("ts") is not None else None
    return (str(ident) if ident is not None else None), kind, ts


def device_of(topic: str) -> tuple[str, str]:
    """(device id, kind) from ``<prefix>/<device>/<kind>``; Refused when the topic has no device."""
    levels = topic.split("/")
    if len(levels) < 3:
        raise Refused("topic", f"topic {topic[:120]!r} is not <prefix>/<device id>/<kind>")
    device = levels[1]
    if not _DEVICE.match(device):
        raise Refused("device_id", f"device id {device[:40]!r} in the topic is not 1-128 of [A-Za-z0-9._:-]")
    return device, "state" if levels[-1] == "state" else "event"


def parse_event(topic_bytes: bytes, data: bytes, config: MqttConfig, received_at: float) -> EventIn:
    """The event a message carries; Refused (with the quarantine kind and reason) when it is not one."""
    try:
        topic = topic_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused("topic", f"the topic is not UTF-8 (invalid byte at offset {exc.start})") from None
    allowed = config.allowed_topics if config.allowed_topics is not None else config.topics
    if topic_filter(tuple(allowed)).fullmatch(topic) is None:
        raise Refused("topic", f"topic {topic[:120]!r} is outside mqtt.allowed_topics")
    device, kind = device_of(topic)
    if len(data) > config.max_payload_bytes:
        raise Refused("too_large", f"payload of {len(data)} bytes exceeds mqtt.max_payload_bytes "
                                   f"({config.max_payload_bytes})", device)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused("not_utf8", f"payload is not UTF-8 (invalid byte at offset {exc.start})", device) from None
    if len(text) > MAX_TEXT_CHARS:
        raise Refused("too_large", f"payload of {len(text)} characters exceeds {MAX_TEXT_CHARS}", device)
    try:
        payload = json.loads(text)
    except RecursionError:
        raise Refused("too_deep", "the JSON payload is nested too deeply", device) from None
    except ValueError as exc:
        raise Refused("not_json", f"payload is not JSON ({exc})", device) from None
    depth, nodes = _depth_and_size(payload)
    if depth > config.max_json_depth or nodes > MAX_NODES:
        raise Refused("too_deep", f"the JSON payload is {depth} levels deep ({nodes} values); at most "
                                  f"{config.max_json_depth} levels and {MAX_NODES} values", device)
    try:
        ident, event_type, ts = _contract(payload)
    except Refused as exc:
        raise Refused(exc.kind, exc.reason, device) from None
    key = f"id:{ident}" if ident is not None else "h:" + hashlib.sha256(f"{topic}\0{text}".encode()).hexdigest()[:40]
    return EventIn(device=device, topic=topic, kind=kind, type=event_type, ts=ts, key=key, text=text.strip() or text,
                   received_at=received_at)


def quarantine_entry(refused: Refused, topic_bytes: bytes, data: bytes, at: float) -> QuarantineIn:
    return QuarantineIn(kind=refused.kind, reason=refused.reason[:500], topic=sample(topic_bytes)[:300],
                        device=refused.device, size=len(data), sample=sample(data), at=at)
