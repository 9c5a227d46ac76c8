"""Home Assistant discovery: the payload against the rules Home Assistant enforces, and the live behaviour.

HA_DEVICE_DISCOVERY restates, as a JSON schema, what Home Assistant's MQTT integration checks
when a device-based discovery message arrives (homeassistant/components/mqtt: schemas.py for the
message, config.py's read-only and read-write schemas and each platform's own required keys).
Home Assistant itself is not run here; the payload is checked against its rules, and the bridge's
behaviour (retained config, availability, birth message, controls) against a real broker.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from appliance.config import HomeAssistantConfig
from appliance.ipc.peers import Peers
from appliance.mqtt.discovery import Topics, discovery_payload
from tests.helpers import Publisher, eventually, serve, start_mosquitto, wait_ready, write_config

_TOPIC = {"type": "string", "minLength": 1, "not": {"pattern": "[#+]"}}
_PLATFORM_RULES = {
    "sensor": ["state_topic"],  # MQTT_RO_SCHEMA
    "binary_sensor": ["state_topic"],
    "event": ["state_topic", "event_types"],
    "text": ["command_topic"],  # MQTT_RW_SCHEMA
    "button": ["command_topic"],
}
HA_DEVICE_DISCOVERY: dict[str, Any] = {
    "type": "object",
    "required": ["device", "origin", "components"],
    # The keys a device message may carry besides its components (shared options).
    "additionalProperties": False,
    "properties": {
        "device": {
            "type": "object",
            "anyOf": [{"required": ["identifiers"], "properties": {"identifiers": {"minItems": 1}}},
                      {"required": ["connections"], "properties": {"connections": {"minItems": 1}}}],
            "properties": {"identifiers": {"type": ["array", "string"], "items": {"type": "string"}},
                           "name": {"type": "string"}, "manufacturer": {"type": "string"},
                           "model": {"type": "string"}, "sw_version": {"type": "string"}},
        },
        "origin": {"type": "object", "required": ["name"],
                   "properties": {"name": {"type": "string", "minLength": 1}, "sw_version": {"type": "string"},
                                  "support_url": {"type": "string", "format": "uri"}}},
        "availability": {"type": "array", "items": {"type": "object", "required": ["topic"],
                                                    "properties": {"topic": _TOPIC}}},
        "availability_topic": _TOPIC, "availability_mode": {"enum": ["all", "any", "latest"]},
        "availability_template": {"type": "string"}, "payload_available": {"type": "string"},
        "payload_not_available": {"type": "string"}, "state_topic": _TOPIC, "command_topic": _TOPIC,
        "qos": {"enum": [0, 1, 2]}, "encoding": {"type": "string"},
        "components": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
            "additionalProperties": {
                "type": "object", "required": ["platform", "unique_id"],
                "properties": {"platform": {"enum": list(_PLATFORM_RULES)}, "unique_id": {"type": "string"},
                               "state_topic": _TOPIC, "command_topic": _TOPIC,
                               "entity_category": {"enum": ["config", "diagnostic"]},
                               "event_types": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                               "max": {"type": "integer", "maximum": 255}, "min": {"type": "integer", "minimum": 0}},
                "allOf": [{"if": {"properties": {"platform": {"const": p}}}, "then": {"required": keys}}
                          for p, keys in _PLATFORM_RULES.items()],
            },
        },
    },
}


def test_the_payload_follows_home_assistants_rules() -> None:
    topics = Topics.for_config(HomeAssistantConfig(node_id="box_1"))
    payload = discovery_payload(topics)
    jsonschema.validate(payload, HA_DEVICE_DISCOVERY)
    components = payload["components"]
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids) and all(u.startswith("box_1_") for u in unique_ids)
    platforms = {key: c["platform"] for key, c in components.items()}
    expected = {"status": "sensor", "events_per_s": "sensor", "tokens_per_s": "sensor", "last_answer": "sensor",
                "ask": "text", "heartbeat": "button", "task_result": "event",
                **{f"service_{name}": "sensor" for name in ("store", "engine", "mqtt", "agent", "api")}}
    assert platforms == expected
    assert topics.discovery == "homeassistant/device/box_1/config"
    # No abbreviations: Home Assistant expands them, but full names are what the issue asks and people read.
    assert not {"dev", "o", "cmps", "p", "stat_t", "cmd_t", "uniq_id"} & _all_keys(payload)


def test_the_rules_catch_what_home_assistant_refuses() -> None:
    good = discovery_payload(Topics.for_config(HomeAssistantConfig(node_id="box_1")))
    broken = [
        {k: v for k, v in good.items() if k != "origin"},
        {**good, "device": {"name": "no identifiers"}},
        {**good, "components": {"x": {"platform": "sensor", "state_topic": "a/b"}}},  # no unique_id
        {**good, "components": {"x": {"platform": "toaster", "unique_id": "x"}}},
        {**good, "components": {"x": {"platform": "text", "unique_id": "x"}}},  # no command_topic
        {**good, "components": {"x": {"platform": "event", "unique_id": "x", "state_topic": "a"}}},  # no types
        {**good, "stat_t": "a/b"},
    ]
    for payload in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, HA_DEVICE_DISCOVERY)


def _all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _all_keys(v)}
    return set()


@pytest.fixture
def broker(tmp_path: Path, config_file: Path) -> Iterator[int]:
    process, port = start_mosquitto(tmp_path / "broker")
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"].update(port=port, home_assistant={"enabled": True, "node_id": "box_1", "state_interval_s": 3600})
    write_config(config_file, data)
    yield port
    process.terminate()
    process.wait(5)


@pytest.mark.slow
async def test_the_appliance_appears_in_home_assistant_and_answers_its_controls(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]],
        capsys: pytest.CaptureFixture[str]) -> None:
    peers = await services("store", "engine")
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
    await wait_ready(peers.mqtt)
    home_assistant = Publisher(broker, "home-assistant")
    try:
        home_assistant.subscribe("homeassistant/device/+/config")
        home_assistant.subscribe("appliance/box_1/#")
        config = _wait_for(home_assistant, "homeassistant/device/box_1/config")
        assert config.retain, "discovery must be retained so Home Assistant finds it after its own restart"
        payload = json.loads(config.payload)
        jsonschema.validate(payload, HA_DEVICE_DISCOVERY)
        with capsys.disabled():
            print("\ndiscovery payload as published on homeassistant/device/box_1/config:\n"
                  + json.dumps(payload, indent=1)[:6000])
        assert _wait_for(home_assistant, "appliance/box_1/availability").payload == b"online"
        state = json.loads(_wait_for(home_assistant, "appliance/box_1/state").payload)
        assert state["status"] in ("ready", "degraded") and state["services"]["store"] == "ready"

        # Home Assistant restarts: its birth message makes the appliance announce itself again.
        announced = _count(home_assistant, "homeassistant/device/box_1/config")
        home_assistant.publish("homeassistant/status", "online")
        eventually(lambda: _count(home_assistant, "homeassistant/device/box_1/config") > announced, 15,
                   "discovery re-published after Home Assistant's birth message")

        # The heartbeat button publishes a fresh state at once (the interval is an hour).
        states = _count(home_assistant, "appliance/box_1/state")
        home_assistant.publish("appliance/box_1/heartbeat/press", "PRESS")
        eventually(lambda: _count(home_assistant, "appliance/box_1/state") > states, 15, "a state after PRESS")

        # The text entity asks the agent; the answer lands in the last-answer sensor's topic.
        home_assistant.publish("appliance/box_1/ask/set", "What happened at the door today?")
        answer = json.loads(_wait_for(home_assistant, "appliance/box_1/answer", timeout_s=120).payload)
        assert answer["question"] == "What happened at the door today?" and isinstance(answer["text"], str)

        # A bridge that dies leaves its last will: Home Assistant shows the entities unavailable.
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        eventually(lambda: _last(home_assistant, "appliance/box_1/availability") == b"offline", 30,
                   "the last will (mqtt keepalive 1.5x)")
    finally:
        home_assistant.close()
        if bridge.poll() is None:
            bridge.terminate()
            bridge.wait(10)


def _wait_for(client: Publisher, topic: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in client.received:
            if message.topic == topic:
                return message
        time.sleep(0.05)
    raise AssertionError(f"nothing on {topic} within {timeout_s} s")


def _count(client: Publisher, topic: str) -> int:
    return sum(1 for m in client.received if m.topic == topic)


def _last(client: Publisher, topic: str) -> bytes | None:
    payloads = [m.payload for m in client.received if m.topic == topic]
    return payloads[-1] if payloads else None
