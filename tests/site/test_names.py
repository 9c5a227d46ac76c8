"""Which entity a person means, in English and Chinese."""

from __future__ import annotations

from appliance.site import names
from tests.sitesim import entity_row as row
from tests.sitesim import every_bridge


def test_names_are_found_by_their_words_in_english_and_chinese() -> None:
    rows = [row(device.name) for device in every_bridge()]
    aliases = {"switch.livingroom_relay": ["客厅继电器"], "climate.office_trv": ["办公室温控器"]}

    def found(query: str, action: str | None = None) -> list[str]:
        return [r.entity_id for r in names.match(query, rows, aliases, action)]

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


def test_names_are_forgiving_as_people_type_them() -> None:
    assert names.norm("Hall Fan") == names.norm("hall_fan") == names.norm("HALL-FAN ")
    assert names.norm("大厅 风扇") == names.norm("大厅风扇") and names.slug("大厅风扇") == ""


def test_an_exact_name_is_meant_even_for_an_action_it_does_not_take() -> None:
    """So that the entity's own refusal says what it takes, instead of "no entity called hall_fan"."""
    rows = [row(device.name) for device in every_bridge()]
    assert [r.entity_id for r in names.match("hall_fan", rows, {}, "unlock")] == ["switch.hall_fan"]
    assert [r.entity_id for r in names.match("hall fan thing", rows, {}, "unlock")] == ["switch.hall_fan"]


def test_a_worse_fit_is_never_acted_on_because_the_better_one_does_not_take_the_action() -> None:
    """"Turn on the living room blind": the blind is meant (and refuses turn_on, saying it takes open),
    not the living room relay, which fits two of the three words but does take turn_on."""
    rows = [row(device.name) for device in every_bridge()]

    def found(query: str, action: str | None = None) -> list[str]:
        return [r.entity_id for r in names.match(query, rows, {}, action)]

    assert found("living room blind", "turn_on") == found("living room blind", "open") == ["cover.living_blind"]
    assert found("living room relay", "turn_on") == ["switch.livingroom_relay"]
    assert "switch.livingroom_relay" not in found("living room blind", "turn_off")
    # Two entities of that exact name, neither unlocks: both are listed, never the "hall fan lock".
    twins = [row("hall_fan"), row("hall_fan").model_copy(update={"entity_id": "fan.hall_fan"}),
             row("front_door").model_copy(update={"entity_id": "lock.hall_fan_lock", "name": "hall fan lock"})]
    assert {r.entity_id for r in names.match("hall fan", twins, {}, "unlock")} == {"switch.hall_fan", "fan.hall_fan"}
