"""States read per component through their templates, the way Home Assistant's MQTT platforms do it."""

from __future__ import annotations

from appliance.protocol.site import EntityRow
from appliance.site import entities
from tests.sitesim import entity_row as row


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
