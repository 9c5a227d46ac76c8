"""Commands planned per component, the way Home Assistant's MQTT platforms publish them; refusals
before anything is published; a change in words."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.protocol.site import EntityRow
from appliance.site import changes, discovery, entities
from appliance.site.entities import Refusal
from tests.sitesim import entity_row as row


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
    planned = changes.plan(row(name, **state), action, args)
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
        changes.plan(row(name, **state), action, args)
    assert words in str(refused.value), str(refused.value)


def test_a_change_is_said_in_words() -> None:
    fan = row("hall_fan", state="on")
    assert changes.describe_change(fan, "off") == "hall_fan turned on"
    assert changes.describe_change(row("front_door_contact", state="on"), "off") == "front_door_contact contact opened"
    sensor = row("office_sensor", state="22.5")
    assert changes.describe_change(sensor, "21.5") == "office_sensor temperature is 22.5 °C (was 21.5)"


def test_select_number_and_text_check_their_declarations() -> None:
    def make(component: str, config: dict[str, Any]) -> EntityRow:
        [announced] = discovery.parse("homeassistant", f"homeassistant/{component}/x/config",
                                      json.dumps({"command_topic": "x/set", "state_topic": "x", **config}).encode(
                                      )).entities
        return EntityRow(**entities.register(announced, lambda _id: None, {}).model_dump(), updated_at=0.0)

    select = make("select", {"options": ["eco", "comfort"]})
    assert changes.plan(select, "set_value", {"value": "eco"}).messages == [("x/set", "eco")]
    with pytest.raises(Refusal, match="one of eco, comfort"):
        changes.plan(select, "set_value", {"value": "turbo"})
    number = make("number", {"min": 10, "max": 20, "step": 2, "command_template": '{"level": {{ value }}}'})
    assert changes.plan(number, "set_value", {"value": 14}).messages == [("x/set", '{"level": 14}')]
    with pytest.raises(Refusal, match="step"):
        changes.plan(number, "set_value", {"value": 15})
    text = make("text", {"max": 5, "pattern": "[a-z]+"})
    with pytest.raises(Refusal, match=r"0 to 5"):
        changes.plan(text, "set_value", {"value": "toolong"})
    with pytest.raises(Refusal, match="does not match"):
        changes.plan(text, "set_value", {"value": "AB"})
    button = make("button", {})
    assert changes.plan(button, "press", {}).messages == [("x/set", "PRESS")]
