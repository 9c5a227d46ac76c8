"""States read and commands planned per component, the way Home Assistant's MQTT platforms do it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.protocol.site import EntityRow
from appliance.site import discovery, entities
from appliance.site.entities import Refusal
from tests.sitesim import every_bridge

PREFIX = "homeassistant"
SITE = {device.name: device for device in every_bridge()}


def row(name: str, **state: Any) -> EntityRow:
    device = SITE[name]
    [announced] = discovery.parse(PREFIX, device.config_topic, json.dumps(device.config).encode()).entities
    made = entities.register(announced, lambda _id: None, {})
    return EntityRow(**made.model_dump(), updated_at=0.0, **state)


def read(entity: EntityRow, topic: str, payload: bytes | str) -> entities.Reading:
    data = payload.encode() if isinstance(payload, str) else payload
    return entities.read(entity.component, entity.config, entities.topics_of(entity.config)[topic], data)


def test_states_are_read_through_each_entitys_templates() -> None:
    fan = row("hall_fan")
    assert read(fan, "zigbee2mqtt/hall_fan", '{"state": "ON", "linkquality": 99}').state == "on"
    assert read(fan, "zigbee2mqtt/bridge/state", '{"state": "offline"}').available is False
    light = read(row("kitchen_light"), "zigbee2mqtt/kitchen_light", '{"state": "ON", "brightness": 127}')
    assert (light.state, light.attributes["brightness"]) == ("on", 127)
    blind = read(row("living_blind"), "zigbee2mqtt/living_blind", '{"state": "OPEN", "position": 40}')
    assert (blind.state, blind.attributes["position"]) == ("open", 40.0)
    assert read(row("front_door"), "zigbee2mqtt/front_door", '{"state": "UNLOCK"}').state == "unlocked"
    trv = read(row("office_trv"), "zigbee2mqtt/office_trv",
               '{"system_mode": "heat", "current_heating_setpoint": 21, "local_temperature": 19.5}')
    assert (trv.state, trv.attributes) == ("heat", {"temperature": 21.0, "current_temperature": 19.5})
    assert read(row("office_sensor"), "zigbee2mqtt/office_sensor", '{"temperature": 22.1}').state == "22.1"
    contact = row("front_door_contact")  # payload_on false: a false contact is an open door
    assert read(contact, "zigbee2mqtt/front_door_contact", '{"contact": false}').state == "on"
    assert read(contact, "zigbee2mqtt/front_door_contact", '{"contact": true}').state == "off"
    plug = row("tasmota_6E7F1A")
    assert read(plug, "tasmota_6E7F1A/stat/RESULT", '{"POWER":"ON"}').state == "on"
    assert read(plug, "tasmota_6E7F1A/tele/LWT", "Offline").available is False
    assert read(row("livingroom_temperature"), "livingroom/sensor/temperature/state", "21.50").state == "21.50"


def test_a_payload_that_does_not_fit_is_kept_raw_and_flagged() -> None:
    fan = row("hall_fan")
    for payload in ('{"state": "MAYBE"}', "not json at all", b"\xff\xfe", '{"linkquality": 3}'):
        reading = read(fan, "zigbee2mqtt/hall_fan", payload)
        assert reading.state is None and reading.problem and reading.raw, payload
    assert "neither" in read(fan, "zigbee2mqtt/hall_fan", '{"state": "MAYBE"}').problem


@pytest.mark.parametrize(("name", "action", "args", "state", "messages"), [
    ("hall_fan", "turn_on", {}, {}, [("zigbee2mqtt/hall_fan/set", "ON")]),
    ("hall_fan", "toggle", {}, {"state": "on"}, [("zigbee2mqtt/hall_fan/set", "OFF")]),
    ("kitchen_light", "turn_on", {"brightness": 255, "color_temp": 300}, {},
     [("zigbee2mqtt/kitchen_light/set", '{"state": "ON", "brightness": 254, "color_temp": 300}')]),
    ("living_blind", "set_value", {"value": 40}, {}, [("zigbee2mqtt/living_blind/set", '{ "position": 40 }')]),
    ("living_blind", "close", {}, {}, [("zigbee2mqtt/living_blind/set", "CLOSE")]),
    ("front_door", "unlock", {}, {}, [("zigbee2mqtt/front_door/set", "UNLOCK")]),
    ("office_trv", "set_temperature", {"temperature": 21.5}, {},
     [("zigbee2mqtt/office_trv/set/current_heating_setpoint", "21.5")]),
    ("office_trv", "set_mode", {"mode": "off"}, {}, [("zigbee2mqtt/office_trv/set/system_mode", "off")]),
    ("tasmota_6E7F1A", "turn_on", {}, {}, [("tasmota_6E7F1A/cmnd/POWER", "ON")]),
    ("livingroom_relay", "turn_off", {}, {}, [("livingroom/switch/relay/command", "OFF")]),
])
def test_commands_are_what_home_assistant_publishes(name: str, action: str, args: dict[str, Any],
                                                    state: dict[str, Any], messages: list[tuple[str, str]]) -> None:
    planned = entities.plan(row(name, **state), action, args)
    assert planned.messages == messages and planned.expect is not None


@pytest.mark.parametrize(("name", "action", "args", "state", "words"), [
    ("office_sensor", "turn_on", {}, {}, "read-only"),
    ("hall_fan", "unlock", {}, {}, "takes turn_on, turn_off, toggle"),
    ("hall_fan", "turn_on", {}, {"available": False}, "offline"),
    ("office_trv", "set_temperature", {"temperature": 45}, {}, "outside 5..30"),
    ("office_trv", "set_temperature", {"temperature": 21.3}, {}, "step"),
    ("office_trv", "set_temperature", {"temperature": "warm"}, {}, "a number"),
    ("office_trv", "set_mode", {"mode": "cool"}, {}, "one of off, auto, heat"),
    ("living_blind", "set_value", {"value": 140}, {}, "outside 0..100"),
    ("kitchen_light", "turn_on", {"color_temp": 100}, {}, "outside 250..454"),
    ("kitchen_light", "turn_off", {"brightness": 3}, {}, "go with turn_on"),
])
def test_what_an_entity_does_not_declare_is_refused(name: str, action: str, args: dict[str, Any],
                                                     state: dict[str, Any], words: str) -> None:
    with pytest.raises(Refusal) as refused:
        entities.plan(row(name, **state), action, args)
    assert words in str(refused.value), str(refused.value)


def test_a_change_is_said_in_words() -> None:
    fan = row("hall_fan", state="on")
    assert entities.describe_change(fan, "off") == "hall_fan turned on"
    assert entities.describe_change(row("front_door_contact", state="on"), "off") == "front_door_contact contact opened"
    sensor = row("office_sensor", state="22.5")
    assert entities.describe_change(sensor, "21.5") == "office_sensor temperature is 22.5 °C (was 21.5)"


def test_select_number_and_text_check_their_declarations() -> None:
    def make(component: str, config: dict[str, Any]) -> EntityRow:
        [announced] = discovery.parse(PREFIX, f"homeassistant/{component}/x/config",
                                      json.dumps({"command_topic": "x/set", "state_topic": "x", **config}).encode(
                                      )).entities
        return EntityRow(**entities.register(announced, lambda _id: None, {}).model_dump(), updated_at=0.0)

    select = make("select", {"options": ["eco", "comfort"]})
    assert entities.plan(select, "set_value", {"value": "eco"}).messages == [("x/set", "eco")]
    with pytest.raises(Refusal, match="one of eco, comfort"):
        entities.plan(select, "set_value", {"value": "turbo"})
    number = make("number", {"min": 10, "max": 20, "step": 2, "command_template": '{"level": {{ value }}}'})
    assert entities.plan(number, "set_value", {"value": 14}).messages == [("x/set", '{"level": 14}')]
    with pytest.raises(Refusal, match="step"):
        entities.plan(number, "set_value", {"value": 15})
    text = make("text", {"max": 5, "pattern": "[a-z]+"})
    with pytest.raises(Refusal, match=r"0 to 5"):
        entities.plan(text, "set_value", {"value": "toolong"})
    with pytest.raises(Refusal, match="does not match"):
        entities.plan(text, "set_value", {"value": "AB"})
    button = make("button", {})
    assert entities.plan(button, "press", {}).messages == [("x/set", "PRESS")]


def test_names_are_found_by_their_words_in_english_and_chinese() -> None:
    rows = [row(name) for name in SITE]
    aliases = {"switch.livingroom_relay": ["客厅继电器"], "climate.office_trv": ["办公室温控器"]}

    def found(query: str, action: str | None = None) -> list[str]:
        return [r.entity_id for r in entities.match(query, rows, aliases, action)]

    assert found("hall fan") == found("Hall_Fan") == ["switch.hall_fan"]
    assert found("the front door", "unlock") == ["lock.front_door"]  # an action narrows to what takes it
    assert found("door") == ["binary_sensor.front_door_contact"]  # a read prefers sensors
    assert found("office temperature") == ["sensor.office_sensor_temperature"]
    assert found("thermostat", "set_temperature") == ["climate.office_trv"]  # what people call a climate entity
    assert found("客厅的继电器", "turn_on") == ["switch.livingroom_relay"]  # site.names, "的" aside
    assert found("办公室温控器") == ["climate.office_trv"]
    assert found("plug", "turn_on") == ["switch.workshop_plug_tasmota"]  # its own name beats its kind's words
    assert set(found("temperature")) == {"sensor.office_sensor_temperature", "sensor.livingroom_temperature"}
    assert found("the moon") == [] and found("") == []
