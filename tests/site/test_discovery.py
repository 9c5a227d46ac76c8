"""Discovery configs as the bridges write them become entities; what is wrong is refused with the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.protocol.site import EntityRow
from appliance.site import discovery, entities
from appliance.site.discovery import DiscoveryRefused
from tests.sitesim import SimDevice, every_bridge, tasmota, zigbee2mqtt

PREFIX = "homeassistant"


def registered(device: SimDevice, taken: dict[str, str] | None = None) -> EntityRow:
    [announced] = discovery.parse(PREFIX, device.config_topic, json.dumps(device.config).encode(),
                                  forbidden=("appliance",)).entities
    made = entities.register(announced, (taken or {}).get, {})
    return EntityRow(**made.model_dump(), updated_at=0.0)


def test_every_bridge_shape_is_read() -> None:
    rows = {row.entity_id: row for row in map(registered, every_bridge())}
    assert set(rows) == {"switch.hall_fan", "light.kitchen_light", "cover.living_blind", "lock.front_door",
                         "climate.office_trv", "sensor.office_sensor_temperature", "binary_sensor.front_door_contact",
                         "switch.workshop_plug_tasmota", "switch.livingroom_relay", "sensor.livingroom_temperature"}
    fan = rows["switch.hall_fan"]
    assert (fan.name, fan.origin, fan.actions) == ("hall_fan", "Zigbee2MQTT", ["turn_on", "turn_off", "toggle"])
    assert fan.config["command_topic"] == "zigbee2mqtt/hall_fan/set"
    assert fan.device_id == "zigbee2mqtt_0x00158d0001a2b3c4"
    plug = rows["switch.workshop_plug_tasmota"]  # abbreviations and ~ with FullTopic %topic%/%prefix%/
    assert plug.config["command_topic"] == "tasmota_6E7F1A/cmnd/POWER"
    assert plug.config["state_topic"] == "tasmota_6E7F1A/stat/RESULT" and plug.config["payload_available"] == "Online"
    relay = rows["switch.livingroom_relay"]  # ESPHome: ~ as a prefix, the device's suggested area
    assert relay.config["command_topic"] == "livingroom/switch/relay/command" and relay.area == "Living room"
    assert relay.name == "livingroom Relay"
    trv = rows["climate.office_trv"]
    assert trv.config["min_temp"] == 5.0 and set(trv.actions) == {"set_mode", "set_temperature", "turn_on",
                                                                   "turn_off"}
    assert rows["sensor.office_sensor_temperature"].actions == [] and not any(row.problem for row in rows.values())


def test_a_device_based_config_announces_each_component() -> None:
    body = {"dev": {"ids": "ea334450945afc", "name": "Kitchen", "mf": "Bla", "sa": "Kitchen"},
            "o": {"name": "bla2mqtt", "sw": "2.1"}, "state_topic": "kitchen/state", "qos": 1,
            "cmps": {"temp": {"p": "sensor", "unit_of_measurement": "°C", "value_template": "{{ value_json.t }}",
                              "unique_id": "temp01ae_t"},
                     "fan": {"p": "switch", "command_topic": "kitchen/fan/set", "value_template": "{{ value_json.f }}",
                             "unique_id": "fan01ae"}}}
    found = discovery.parse(PREFIX, "homeassistant/device/kitchen/config", json.dumps(body).encode())
    assert [(a.key, a.component, a.config["state_topic"]) for a in found.entities] == [
        ("homeassistant/device/kitchen/config#temp", "sensor", "kitchen/state"),
        ("homeassistant/device/kitchen/config#fan", "switch", "kitchen/state")]
    assert found.entities[0].origin == "bla2mqtt" and found.entities[0].device["suggested_area"] == "Kitchen"
    assert discovery.parse(PREFIX, "homeassistant/device/kitchen/config", b"").entities == []  # withdrawn


@pytest.mark.parametrize(("topic", "payload", "words"), [
    ("homeassistant/switch/x/config", b"{not json", "not UTF-8 JSON"),
    ("homeassistant/switch/x/config", b"\xff\xfe", "not UTF-8 JSON"),
    ("homeassistant/switch/x/config", b"[1, 2]", "JSON object"),
    ("homeassistant/switch/x/config", b'{"name": "x"}', "command_topic: required"),
    ("homeassistant/sensor/x/config", b'{"name": "x"}', "state_topic: required"),
    ("homeassistant/select/x/config", b'{"command_topic": "a/b"}', "options: required"),
    ("homeassistant/switch/x/config", b'{"command_topic": "zigbee2mqtt/#"}', "wildcard"),
    ("homeassistant/switch/x/config", b'{"command_topic": "a/+/set"}', "wildcard"),
    ("homeassistant/switch/x/config", b'{"command_topic": "homeassistant/switch/y/config"}', "discovery prefix"),
    ("homeassistant/switch/x/config", b'{"command_topic": "appliance/node/ask"}', "own topics"),
    ("homeassistant/switch/x/config", b'{"command_topic": "a\\u0000b"}', "NUL"),
    ("homeassistant/switch/x/config", json.dumps({"command_topic": "t" * 300}).encode(), "256"),
    ("homeassistant/switch/x/config", json.dumps({"command_topic": "a/b", "pad": "x" * 100_000}).encode(),
     "at most 16384"),
    ("homeassistant/vacuum/x/config", b'{"command_topic": "a/b"}', "not one this box reads"),
    ("homeassistant/switch/config", b'{"command_topic": "a/b"}', "is not homeassistant"),
    ("homeassistant/number/x/config", b'{"command_topic": "a/b", "min": "low"}', "min: 'low' is not a number"),
    ("homeassistant/select/x/config", b'{"command_topic": "a/b", "options": "one"}', "options: a list"),
    ("homeassistant/switch/x/config", b'{"command_topic": "a/b", "availability": "x"}', "availability: a list"),
    ("homeassistant/switch/x/config", b'{"command_topic": "a/b", "device": {"identifiers": [1]}}', "identifiers"),
    ("homeassistant/device/d/config", b'{"cmps": {"a": {"p": "robot"}}, "dev": {"ids": "d"}}', "platform"),
    ("homeassistant/device/d/config", b'{"cmps": {"a": {"p": "sensor"}}}', "names its device"),
])
def test_a_wrong_config_is_refused_saying_what_is_wrong(topic: str, payload: bytes, words: str) -> None:
    with pytest.raises(DiscoveryRefused) as refused:
        discovery.parse(PREFIX, topic, payload, forbidden=("appliance",))
    assert words in str(refused.value), str(refused.value)


def test_a_template_that_will_not_run_is_reported_on_its_entity() -> None:
    config: dict[str, Any] = {"command_topic": "x/set", "state_topic": "x", "value_template":
                              "{% for i in range(99999999) %}{% endfor %}"}
    [announced] = discovery.parse(PREFIX, "homeassistant/switch/x/config", json.dumps(config).encode()).entities
    assert "value_template: for is not allowed" in announced.problems[0]
    row = entities.register(announced, lambda _id: None, {})
    assert row.problem.startswith("value_template") and row.entity_id == "switch.x"


def test_ids_are_unique_and_names_forgiving() -> None:
    [first] = zigbee2mqtt()[:1]
    twin = SimDevice("twin", "homeassistant/switch/0xother/switch/config", dict(first.config), "", {}, [],
                     first.answer)
    one = registered(first)
    two = registered(twin, {one.entity_id: one.key})
    assert (one.entity_id, two.entity_id) == ("switch.hall_fan", "switch.hall_fan_2")
    assert registered(tasmota()[0]).entity_id == "switch.workshop_plug_tasmota"
