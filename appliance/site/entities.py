"""What an entity is, what its payloads mean, and what to publish to change it, the way Home Assistant
does it for each component (its MQTT integration's documented defaults).

- ``register``: an announced config becomes an EntityConfig: its id (``<component>.<object_id>``,
  made unique), its friendly name (the device's name, then the entity's own), its area (the device's
  suggested area unless the site's config says otherwise) and the actions entities.set takes.
- ``read``: a payload on one of the entity's topics becomes its new state and attributes, through
  its templates; what does not fit is kept raw and flagged, never guessed.
- ``plan``: an action with its arguments becomes the messages to publish and what the state must
  then look like; anything the entity does not declare (no command topic, a value out of range or
  not among the options) is refused before anything is published.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.protocol.site import EntityConfig, EntityRow
from appliance.site import templates
from appliance.site.discovery import Announced

ON, OFF = "on", "off"
COVER_STATES = {"state_open": "open", "state_opening": "opening", "state_closed": "closed",
                "state_closing": "closing", "state_stopped": "stopped"}
LOCK_STATES = {"state_locked": ("LOCKED", "locked"), "state_unlocked": ("UNLOCKED", "unlocked"),
               "state_locking": ("LOCKING", "locking"), "state_unlocking": ("UNLOCKING", "unlocking"),
               "state_jammed": ("JAMMED", "jammed"), "state_open": ("OPEN", "open"),
               "state_opening": ("OPENING", "opening")}
CLIMATE_MODES = ["auto", "off", "cool", "heat", "dry", "fan_only"]


class Refusal(ValueError):
    """entities.set will not do this; nothing was published. The message says why."""


def slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", folded)).strip("_")[:128]


def norm(text: str) -> str:
    """A name as people type it: case, width, spaces, dashes and underscores do not matter."""
    return re.sub(r"[\s_\-.·]+", "", unicodedata.normalize("NFKC", text).casefold())


def friendly_name(config: dict[str, Any], device: dict[str, Any]) -> str:
    own = config.get("name")
    device_name = device.get("name") if isinstance(device.get("name"), str) else ""
    if not isinstance(own, str) or not own:
        return device_name or ""
    if device_name and not norm(own).startswith(norm(device_name)):
        return f"{device_name} {own}"
    return own


def actions_for(component: str, config: dict[str, Any]) -> list[str]:
    """What entities.set takes for an entity of this component and config."""
    has = config.get
    if component in ("switch", "light", "fan"):
        found = ["turn_on", "turn_off", "toggle"]
        if component == "fan" and has("percentage_command_topic"):
            found.append("set_value")
        return found
    if component == "cover":
        found = [a for a, key in (("open", "command_topic"), ("close", "command_topic"), ("stop", "command_topic"))
                 if has(key)]
        return found + (["set_value"] if has("set_position_topic") else [])
    if component == "lock":
        return ["lock", "unlock"] + (["open"] if has("payload_open") else [])
    if component == "climate":
        found = ["set_mode"] if has("mode_command_topic") else []
        found += ["set_temperature"] if has("temperature_command_topic") else []
        return found + (["turn_on", "turn_off"] if has("power_command_topic") or has("mode_command_topic") else [])
    if component == "button":
        return ["press"]
    if component in ("number", "select", "text"):
        return ["set_value"]
    return []  # sensor, binary_sensor, event: read-only


def register(announced: Announced, taken: Callable[[str], str | None], areas: dict[str, str]) -> EntityConfig:
    """The entity an announcement describes. ``taken(entity_id)``: the key already holding that id (an
    id another key holds gets _2, _3...); ``areas``: the site's own area for an entity id, which wins."""
    config = announced.config
    name = friendly_name(config, announced.device)
    wanted = config.get("default_entity_id")
    if isinstance(wanted, str) and "." in wanted:
        base = slug(wanted.split(".", 1)[1])
    else:
        base = slug(str(config.get("object_id") or "")) or slug(name) or slug(announced.object_id) or "entity"
    entity_id = f"{announced.component}.{base}"
    n = 1
    while taken(entity_id) not in (None, announced.key):
        n += 1
        entity_id = f"{announced.component}.{base}_{n}"
    identifiers = announced.device.get("identifiers") or []
    area = areas.get(entity_id) or announced.device.get("suggested_area") or None
    return EntityConfig(entity_id=entity_id, key=announced.key, component=announced.component,
                        name=(name or announced.object_id)[:256], area=area[:128] if isinstance(area, str) else None,
                        device_id=str(identifiers[0])[:256] if identifiers else "", device=announced.device,
                        origin=announced.origin, config=config, actions=actions_for(announced.component, config),
                        problem="; ".join(announced.problems)[:2000])


# --- reading payloads ----------------------------------------------------------------------------

@dataclass
class Reading:
    state: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    available: bool | None = None
    problem: str = ""
    raw: str = ""


def topics_of(config: dict[str, Any]) -> dict[str, list[str]]:
    """Each topic the entity listens on, with its roles there (one topic may carry several: a
    Zigbee2MQTT thermostat's mode, set point and temperature all come on one topic)."""
    roles: dict[str, list[str]] = {}
    for key, value in config.items():
        if key.endswith("_topic") and isinstance(value, str) and not key.endswith("command_topic") \
                and key != "set_position_topic":
            roles.setdefault(value, []).append(key.removesuffix("_topic"))
    for n, item in enumerate(config.get("availability") or []):
        roles.setdefault(item["topic"], []).append(f"availability:{n}")
    return roles


def _value(config: dict[str, Any], template_key: str | None, variables: dict[str, Any]) -> str:
    template = config.get(template_key) if template_key else None
    if isinstance(template, str):
        return templates.render(template, **variables)
    return str(variables["value"]).strip()


def _text(value: Any) -> str:
    """A configured payload as Home Assistant compares it: text (a JSON true is "True")."""
    return str(value)


def _binary(config: dict[str, Any], value: str) -> str:
    on = _text(config.get("state_on", config.get("payload_on", "ON")))
    off = _text(config.get("state_off", config.get("payload_off", "OFF")))
    if value == on:
        return ON
    if value == off:
        return OFF
    raise templates.TemplateProblem(f"{value[:60]!r} is neither {on!r} (on) nor {off!r} (off)")


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise templates.TemplateProblem(f"{value[:60]!r} is not a number") from None
    if not math.isfinite(number):
        raise templates.TemplateProblem(f"{value[:60]!r} is not a finite number")
    return number


def _scaled(value: float, low: float, high: float) -> float:
    """A device's value in [low, high] as a percentage."""
    return round((value - low) / (high - low) * 100, 2) if high > low else value


def read(component: str, config: dict[str, Any], roles: list[str], payload: bytes) -> Reading:
    reading = Reading()
    variables = templates.payload_variables(payload)
    for role in roles:
        try:
            _read_role(component, config, role, variables, reading)
        except templates.TemplateProblem as exc:
            reading.problem = f"{role}: {exc}"[:2000]
            reading.raw = variables["value"][:4096]
    return reading


def _read_role(component: str, config: dict[str, Any], role: str, variables: dict[str, Any],
               reading: Reading) -> None:
    if role.startswith("availability"):
        reading.available = _availability(config, role, variables)
        return
    if role == "json_attributes":
        rendered = _value(config, "json_attributes_template", variables)
        try:
            attributes = json.loads(rendered)
        except ValueError:
            raise templates.TemplateProblem("json_attributes: not a JSON object") from None
        if not isinstance(attributes, dict):
            raise templates.TemplateProblem("json_attributes: not a JSON object")
        reading.attributes.update({str(k)[:64]: v for k, v in list(attributes.items())[:64]})
        return
    if component == "light" and config.get("schema") == "json" and role == "state":
        _read_json_light(config, variables, reading)
        return
    reader = READERS.get((component, role)) or READERS.get(("*", role))
    if reader is None:
        return  # a topic of this entity this box does not read (an action topic, say)
    reader(config, variables, reading)


def _availability(config: dict[str, Any], role: str, variables: dict[str, Any]) -> bool | None:
    item: dict[str, Any] = {}
    if role.startswith("availability:"):
        item = config["availability"][int(role.split(":")[1])]
    template = item.get("value_template") or config.get("availability_template")
    value = templates.render(template, **variables) if template else str(variables["value"]).strip()
    available = _text(item.get("payload_available", config.get("payload_available", "online")))
    missing = _text(item.get("payload_not_available", config.get("payload_not_available", "offline")))
    if value == available:
        return True
    if value == missing:
        return False
    raise templates.TemplateProblem(f"availability: {value[:60]!r} is neither {available!r} nor {missing!r}")


def _read_json_light(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    body = variables.get("value_json")
    if not isinstance(body, dict):
        raise templates.TemplateProblem("a json light's state is a JSON object")
    state = str(body.get("state", "")).upper()
    if state not in ("ON", "OFF"):
        raise templates.TemplateProblem(f"state {str(body.get('state'))[:40]!r} is neither ON nor OFF")
    reading.state = ON if state == "ON" else OFF
    for key in ("brightness", "color_temp", "color_mode", "effect"):
        if key in body:
            reading.attributes[key] = body[key]


def _state_binary(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    key = "state_value_template" if "state_value_template" in config else "value_template"
    reading.state = _binary(config, _value(config, key, variables))


def _state_plain(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    if value == "":
        raise templates.TemplateProblem("the value template rendered nothing")
    reading.state = value[:4096]


def _state_number(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    _number(value)
    reading.state = value


def _state_select(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    if value not in config.get("options", []):
        raise templates.TemplateProblem(f"{value[:60]!r} is not one of its options")
    reading.state = value


def _state_cover(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    for key, state in COVER_STATES.items():
        if value == _text(config.get(key, state)):
            reading.state = state
            return
    if value in (_text(config.get("payload_open", "OPEN")), _text(config.get("payload_close", "CLOSE"))):
        reading.state = "open" if value == _text(config.get("payload_open", "OPEN")) else "closed"
        return
    raise templates.TemplateProblem(f"{value[:60]!r} is not a cover state it declares")


def _position(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _number(_value(config, "position_template", variables))
    closed, opened = float(config.get("position_closed", 0)), float(config.get("position_open", 100))
    reading.attributes["position"] = _scaled(value, closed, opened)


def _state_lock(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    for key, (default, state) in LOCK_STATES.items():
        if value == _text(config.get(key, default)):
            reading.state = state
            return
    raise templates.TemplateProblem(f"{value[:60]!r} is not a lock state it declares")


def _state_event(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    rendered = _value(config, "value_template", variables)
    try:
        body = json.loads(rendered)
    except ValueError:
        raise templates.TemplateProblem("an event's payload is a JSON object with event_type") from None
    if not isinstance(body, dict) or body.get("event_type") not in config.get("event_types", []):
        raise templates.TemplateProblem("event_type missing or not one of its event_types")
    reading.state = str(body["event_type"])
    reading.attributes.update({str(k)[:64]: v for k, v in list(body.items())[:32] if k != "event_type"})


def _attribute(name: str, template_key: str, numeric: bool = True) -> Callable[..., None]:
    def read_it(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
        value = _value(config, template_key, variables)
        reading.attributes[name] = _number(value) if numeric else value

    return read_it


def _climate_mode(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "mode_state_template", variables)
    if value not in config.get("modes", CLIMATE_MODES):
        raise templates.TemplateProblem(f"mode {value[:60]!r} is not one of its modes")
    reading.state = value


def _fan_percentage(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _number(_value(config, "percentage_value_template", variables))
    low, high = float(config.get("speed_range_min", 1)), float(config.get("speed_range_max", 100))
    reading.attributes["percentage"] = 0.0 if value == 0 else _scaled(value, low - 1, high)


READERS: dict[tuple[str, str], Callable[[dict[str, Any], dict[str, Any], Reading], None]] = {
    ("switch", "state"): _state_binary, ("light", "state"): _state_binary, ("fan", "state"): _state_binary,
    ("binary_sensor", "state"): _state_binary, ("sensor", "state"): _state_plain, ("text", "state"): _state_plain,
    ("number", "state"): _state_number, ("select", "state"): _state_select, ("cover", "state"): _state_cover,
    ("cover", "position"): _position, ("lock", "state"): _state_lock, ("event", "state"): _state_event,
    ("light", "brightness_state"): _attribute("brightness", "brightness_value_template"),
    ("light", "color_temp_state"): _attribute("color_temp", "color_temp_value_template"),
    ("fan", "percentage_state"): _fan_percentage,
    ("fan", "preset_mode_state"): _attribute("preset_mode", "preset_mode_value_template", numeric=False),
    ("climate", "mode_state"): _climate_mode,
    ("climate", "temperature_state"): _attribute("temperature", "temperature_state_template"),
    ("climate", "current_temperature"): _attribute("current_temperature", "current_temperature_template"),
}


# --- planning commands ---------------------------------------------------------------------------

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
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else _text(value)


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
    payload = _payload(config, "command_template", _text(config.get("payload_on" if on else "payload_off",
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
    state = (config["command_topic"], _text(config.get("payload_on" if on else "payload_off", "ON" if on else "OFF")))
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
            else _text(device)
        expect, why = _expect_state("", config, "position_topic")
        if expect is not None:
            expect = lambda row: _near(row.attributes.get("position"), position, 1.0)  # noqa: E731
        return Plan([(config["set_position_topic"], payload)], expect, why)
    key, default, states = {"open": ("payload_open", "OPEN", ("open", "opening")),
                            "close": ("payload_close", "CLOSE", ("closed", "closing")),
                            "stop": ("payload_stop", "STOP", ())}[action]
    payload = _payload(config, "command_template", _text(config.get(key, default)))
    expect, why = (None, "stop has no state to wait for") if not states else _expect_state("", config)
    if expect is not None:
        expect = lambda row: row.state in states  # noqa: E731
    return Plan([(config["command_topic"], payload)], expect, why)


def _plan_lock(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    key, default, state = {"lock": ("payload_lock", "LOCK", "locked"), "unlock": ("payload_unlock", "UNLOCK",
                                                                                  "unlocked"),
                           "open": ("payload_open", "OPEN", "open")}[action]
    payload = _payload(config, "command_template", _text(config.get(key, default)))
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
    payload = _text(config.get("payload_on" if on else "payload_off", "ON" if on else "OFF"))
    return Plan([(config["power_command_topic"], payload)], None, "power has no state topic of its own")


def _plan_button(entity: EntityRow, config: dict[str, Any], action: str, args: dict[str, Any]) -> Plan:
    payload = _payload(config, "command_template", _text(config.get("payload_press", "PRESS")))
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


# --- naming ----------------------------------------------------------------------------------------

STOPWORDS = frozenset({"the", "a", "an", "my", "our", "please", "of", "in", "on", "at", "to", "is", "now"})
CJK_STOP = "的把请将给"  # particles a name never needs ("一" is kept: 一号泵 is pump 1)
READ_FIRST = ("sensor", "binary_sensor", "climate", "event")  # a name read, not commanded, means these first
# What people call each kind of entity, besides its component's name (English and Chinese).
COMPONENT_WORDS = {
    "climate": "thermostat heating heater trv radiator hvac 温控 温控器 空调 暖气",
    "cover": "blind curtain shade shutter 窗帘",
    "lock": "door 锁 门锁", "light": "lamp 灯", "fan": "ventilator 风扇", "switch": "plug relay socket 开关 插座",
    "sensor": "reading 传感器", "binary_sensor": "contact 门磁", "button": "按钮", "device": "设备",
}


def _tokens(text: str) -> set[str]:
    """Words of Latin text; single characters and pairs of Han text (a Chinese name has no spaces)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = {w for w in re.findall(r"[a-z0-9]+", folded) if w not in STOPWORDS}
    han = "".join(ch for ch in folded if "\u4e00" <= ch <= "\u9fff" and ch not in CJK_STOP)
    words |= set(han) | {han[i:i + 2] for i in range(len(han) - 1)}
    return words


def _names_of(row: EntityRow, aliases: list[str]) -> list[str]:
    return [row.entity_id, row.entity_id.split(".", 1)[1], row.name, *aliases]


def match(query: str, rows: list[EntityRow], aliases: dict[str, list[str]], action: str | None = None) -> list[
        EntityRow]:
    """The entities ``query`` most likely means, best first (one when it is clear): an exact name, id or
    alias; else the rows whose words cover the query's, most alike first; an action narrows to the
    entities that take it, a read prefers sensors. Several left: the caller lists them."""
    if action is not None:
        rows = [row for row in rows if action in row.actions]
    wanted = norm("".join(ch for ch in query if ch not in CJK_STOP))
    exact = [row for row in rows if wanted in {norm(n) for n in _names_of(row, aliases.get(row.entity_id, []))}]
    if exact:
        return exact
    asked = _tokens(query)
    if not asked:
        return []
    scored: list[tuple[float, int, int, float, EntityRow]] = []
    for row in rows:
        named: set[str] = set()
        for name in [*_names_of(row, aliases.get(row.entity_id, [])), row.area or ""]:
            named |= _tokens(name.replace("_", " "))
        kind = _tokens(" ".join([row.component.replace("_", " "), COMPONENT_WORDS.get(row.component, ""),
                                 str(row.config.get("device_class") or "")]))
        have = named | kind
        covered = len(asked & have)
        if covered * 2 < len(asked) or covered == 0:
            continue
        preferred = int(action is None and row.component in READ_FIRST)
        # Words of its own names count before words of its kind ("plug" names the plug, not every switch).
        scored.append((covered / len(asked), len(asked & named), preferred, covered / len(asked | have), row))
    if not scored:
        return []
    scored.sort(key=lambda item: item[:4], reverse=True)
    top = [item for item in scored if item[:3] == scored[0][:3]]
    # Clearly the closest (its words barely go beyond the query's), or several that fit as well.
    if len(top) == 1 or top[0][3] >= 1.5 * top[1][3]:
        return [top[0][4]]
    return [item[4] for item in top]
