"""What to publish to change an entity, and a change as a sentence for memory.

- ``plan``: an action with its arguments becomes the messages to publish and what the state must
  then look like; anything the entity does not declare (no command topic, a value out of range or
  not among the options) is refused before anything is published, as Home Assistant's MQTT
  integration would build the same command from the same discovery config.
- ``describe_change``: "Hall fan turned on", "Office temperature is 21.5 °C (was 21.0)".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.protocol.site import EntityRow
from appliance.site import templates
from appliance.site.entities import CLIMATE_MODES, OFF, ON, Refusal, payload_text


@dataclass
class Plan:
    """What to publish, and what the entity's state must show afterwards (None: it has no state to
    show, or no state topic to show it on: the outcome can only be unconfirmed or, for a button,
    taken by the broker)."""

    messages: list[tuple[str, str]]
    expect: Callable[[EntityRow], bool] | None
    why_unconfirmable: str = ""


def _payload(config: dict[str, Any], template_key: str, value: Any, **more: Any) -> str:
    template = config.get(template_key)
    if isinstance(template, str):
        try:
            return templates.render(template, value=value, **more)
        except templates.TemplateProblem as exc:
            raise Refusal(f"{template_key}: {exc}") from None
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else payload_text(value)


def _arg_number(args: dict[str, Any], name: str, low: float, high: float, step: float | None = None) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refusal(f"args.{name}: a number is needed")
    if not low <= value <= high:
        raise Refusal(f"args.{name}: {value:g} is outside {low:g}..{high:g}")
    if step and abs(round((value - low) / step) * step - (value - low)) > 1e-6:
        raise Refusal(f"args.{name}: {value:g} is not a multiple of the step {step:g} from {low:g}")
    return float(value)


def _clean(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number


def _has_state(config: dict[str, Any], key: str = "state_topic") -> bool:
    return bool(config.get(key)) and not config.get("optimistic", False)


def plan(entity: EntityRow, action: str, args: dict[str, Any]) -> Plan:
    """The messages that carry out ``action``, or a Refusal; the entity's declared actions only."""
    if action not in entity.actions:
        declared = ", ".join(entity.actions) or "none: it is read-only"
        raise Refusal(f"a {entity.component} takes {declared}; not {action!r}")
    if entity.available is False:
        raise Refusal(f"{entity.entity_id} is offline (its availability topic says so)")
    config: dict[str, Any] = dict(entity.config)
    planner = PLANNERS[entity.component]
    return planner(entity, config, action, args)


def _expect_state(state: str, config: dict[str, Any], key: str = "state_topic") -> tuple[
        Callable[[EntityRow], bool] | None, str]:
    if not _has_state(config, key):
        return None, "it has no state topic (or is optimistic): the device cannot confirm"
    return (lambda row: row.state == state), ""


def _onoff(entity: EntityRow, action: str) -> bool:
    if action == "toggle":
        return entity.state != ON
    return action == "turn_on"


def _plan_switch(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    on = _onoff(entity, action)
    payload = _payload(config, "command_template", payload_text(config.get("payload_on" if on else "payload_off",
                                                                      "ON" if on else "OFF")))
    expect, why = _expect_state(ON if on else OFF, config)
    return Plan([(config["command_topic"], payload)], expect, why)


def _plan_light(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    on = _onoff(entity, action)
    scale = float(config.get("brightness_scale", 255))
    brightness = _arg_number(args, "brightness", 0, 255) if "brightness" in args else None
    color_temp = None
    if "color_temp" in args:
        color_temp = _arg_number(args, "color_temp", float(config.get("min_mireds", 153)),
                                 float(config.get("max_mireds", 500)))
    if (brightness is not None or color_temp is not None) and not on:
        raise Refusal("brightness and color_temp go with turn_on")
    device_brightness = round(brightness / 255 * scale) if brightness is not None else None
    if config.get("schema") == "json":
        body: dict[str, Any] = {"state": "ON" if on else "OFF"}
        if device_brightness is not None:
            body["brightness"] = device_brightness
        if color_temp is not None:
            body["color_temp"] = _clean(color_temp)
        expect, why = _expect_state(ON if on else OFF, config)
        if expect is not None and device_brightness is not None:
            expect = _and(expect, lambda row: row.attributes.get("brightness") == device_brightness)
        return Plan([(config["command_topic"], json.dumps(body))], expect, why)
    messages: list[tuple[str, str]] = []
    if device_brightness is not None:
        if not config.get("brightness_command_topic"):
            raise Refusal("it declares no brightness_command_topic")
        messages.append((config["brightness_command_topic"],
                         _payload(config, "brightness_command_template", device_brightness)))
    if color_temp is not None:
        if not config.get("color_temp_command_topic"):
            raise Refusal("it declares no color_temp_command_topic")
        messages.append((config["color_temp_command_topic"],
                         _payload(config, "color_temp_command_template", _clean(color_temp))))
    state = (config["command_topic"],
             payload_text(config.get("payload_on" if on else "payload_off", "ON" if on else "OFF")))
    order = config.get("on_command_type", "last")
    if not on or not messages:
        messages = [state]
    elif order == "first":
        messages.insert(0, state)
    elif order == "last":
        messages.append(state)
    expect, why = _expect_state(ON if on else OFF, config)
    return Plan(messages, expect, why)


def _and(first: Callable[[EntityRow], bool], second: Callable[[EntityRow], bool]) -> Callable[[EntityRow], bool]:
    return lambda row: first(row) and second(row)


def _plan_fan(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    if action != "set_value":
        return _plan_switch(entity, config, action, args)
    percentage = _arg_number(args, "value", 0, 100)
    low, high = float(config.get("speed_range_min", 1)), float(config.get("speed_range_max", 100))
    speed = 0 if percentage == 0 else math.ceil(percentage / 100 * (high - low + 1) + low - 1)
    payload = _payload(config, "percentage_command_template", speed)
    expect, why = _expect_state("", config, "percentage_state_topic")
    if expect is not None:
        expect = lambda row: row.attributes.get("percentage") is not None  # noqa: E731 - a changed reading
    return Plan([(config["percentage_command_topic"], payload)], expect, why)


def _plan_cover(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    if action == "set_value":
        position = _arg_number(args, "value", 0, 100)
        closed, opened = float(config.get("position_closed", 0)), float(config.get("position_open", 100))
        device = _clean(round(closed + (opened - closed) * position / 100, 2))
        template = config.get("set_position_template")
        payload = templates.render(template, position=device, value=device) if isinstance(template, str) \
            else payload_text(device)
        expect, why = _expect_state("", config, "position_topic")
        if expect is not None:
            expect = lambda row: _near(row.attributes.get("position"), position, 1.0)  # noqa: E731
        return Plan([(config["set_position_topic"], payload)], expect, why)
    key, default, states = {"open": ("payload_open", "OPEN", ("open", "opening")),
                            "close": ("payload_close", "CLOSE", ("closed", "closing")),
                            "stop": ("payload_stop", "STOP", ())}[action]
    payload = _payload(config, "command_template", payload_text(config.get(key, default)))
    expect, why = (None, "stop has no state to wait for") if not states else _expect_state("", config)
    if expect is not None:
        expect = lambda row: row.state in states  # noqa: E731
    return Plan([(config["command_topic"], payload)], expect, why)


def _plan_lock(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    key, default, state = {"lock": ("payload_lock", "LOCK", "locked"), "unlock": ("payload_unlock", "UNLOCK",
                                                                                  "unlocked"),
                           "open": ("payload_open", "OPEN", "open")}[action]
    payload = _payload(config, "command_template", payload_text(config.get(key, default)))
    expect, why = _expect_state(state, config)
    return Plan([(config["command_topic"], payload)], expect, why)


def _plan_climate(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    modes = config.get("modes", CLIMATE_MODES)
    if action == "set_temperature":
        low, high = float(config.get("min_temp", 7)), float(config.get("max_temp", 35))
        step = float(config.get("temp_step", config.get("precision", 0.5)) or 0.5)
        temperature = _arg_number(args, "temperature", low, high, step)
        payload = _payload(config, "temperature_command_template", _clean(temperature))
        expect, why = _expect_state("", config, "temperature_state_topic")
        if expect is not None:
            expect = lambda row: row.attributes.get("temperature") == temperature  # noqa: E731
        return Plan([(config["temperature_command_topic"], payload)], expect, why)
    if action == "set_mode" or (action in ("turn_on", "turn_off") and not config.get("power_command_topic")):
        mode = args.get("mode") if action == "set_mode" else ("off" if action == "turn_off" else next(
            (m for m in ("heat", "auto", "cool") if m in modes), None))
        if not isinstance(mode, str) or mode not in modes:
            raise Refusal(f"args.mode: one of {', '.join(modes)}")
        payload = _payload(config, "mode_command_template", mode)
        expect, why = _expect_state(mode, config, "mode_state_topic")
        return Plan([(config["mode_command_topic"], payload)], expect, why)
    on = action == "turn_on"
    payload = payload_text(config.get("payload_on" if on else "payload_off", "ON" if on else "OFF"))
    return Plan([(config["power_command_topic"], payload)], None, "power has no state topic of its own")


def _plan_button(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    payload = _payload(config, "command_template", payload_text(config.get("payload_press", "PRESS")))
    return Plan([(config["command_topic"], payload)], None, "a button has no state")


def _plan_value(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    value = args.get("value")
    if entity.component == "number":
        number = _arg_number(args, "value", float(config.get("min", 1)), float(config.get("max", 100)),
                             float(config.get("step", 1)) or None)
        payload = _payload(config, "command_template", _clean(number))
        expect, why = _expect_state("", config)
        if expect is not None:
            expect = lambda row: row.state is not None and _close(row.state, number)  # noqa: E731
        return Plan([(config["command_topic"], payload)], expect, why)
    if entity.component == "select":
        if not isinstance(value, str) or value not in config.get("options", []):
            raise Refusal(f"args.value: one of {', '.join(config.get('options', []))}")
    else:
        low, high = int(config.get("min", 0)), int(config.get("max", 255))
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise Refusal(f"args.value: a text of {low} to {high} characters")
        pattern = config.get("pattern")
        if isinstance(pattern, str):
            try:
                matched = re.fullmatch(pattern, value, flags=0) is not None
            except re.error:
                raise Refusal("its pattern is not a regular expression") from None
            if not matched:
                raise Refusal(f"args.value: does not match {pattern!r}")
    payload = _payload(config, "command_template", value)
    expect, why = _expect_state(str(value), config)
    return Plan([(config["command_topic"], payload)], expect, why)


def _near(value: Any, number: float, within: float) -> bool:
    return isinstance(value, int | float) and abs(value - number) < within


def _close(text: str, number: float) -> bool:
    try:
        return abs(float(text) - number) < 1e-6
    except ValueError:
        return False


PLANNERS: dict[str, Callable[[EntityRow, dict[str, Any], str, dict[str, Any]], Plan]] = {
    "switch": _plan_switch, "light": _plan_light, "fan": _plan_fan, "cover": _plan_cover, "lock": _plan_lock,
    "climate": _plan_climate, "button": _plan_button, "number": _plan_value, "select": _plan_value,
    "text": _plan_value,
}


def describe_change(entity: EntityRow, before: str | None) -> str:
    """The change as a sentence for memory: "Hall fan turned on", "Office temperature is 21.5 °C"."""
    name, state = entity.name or entity.entity_id, entity.state
    words = {ON: "turned on", OFF: "turned off", "locked": "was locked", "unlocked": "was unlocked",
             "open": "opened", "closed": "closed", "opening": "is opening", "closing": "is closing",
             "jammed": "is jammed", "stopped": "stopped"}
    if entity.component in ("switch", "light", "fan", "binary_sensor", "lock", "cover") and state in words:
        if entity.component == "binary_sensor" and entity.config.get("device_class") in ("door", "window", "opening"):
            return f"{name} {'opened' if state == ON else 'closed'}"
        return f"{name} {words[state]}"
    unit = entity.config.get("unit_of_measurement")
    if entity.component == "event":
        return f"{name}: {state}"
    if entity.component == "climate":
        return f"{name} mode is {state}"
    return f"{name} is {state}{' ' + unit if isinstance(unit, str) and unit else ''}" + (
        f" (was {before})" if before is not None else "")


