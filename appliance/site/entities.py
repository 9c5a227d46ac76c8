"""What an entity is and what its payloads mean, the way Home Assistant
does it for each component (its MQTT integration's documented defaults).

- ``register``: an announced config becomes an EntityConfig: its id (``<component>.<object_id>``,
  made unique), its friendly name (the device's name, then the entity's own), its area (the device's
  suggested area unless the site's config says otherwise) and the actions entities.set takes.
- ``read``: a payload on one of the entity's topics becomes its new state and attributes, through
  its templates; what does not fit is kept raw and flagged, never guessed.

What to publish to change an entity is changes.py; which entity a person means, names.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.protocol.site import EntityConfig
from appliance.site import templates
from appliance.site.discovery import Announced
from appliance.site.names import norm, slug

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


def payload_text(value: Any) -> str:
    """A configured payload as Home Assistant compares it: text (a JSON true is "True")."""
    return str(value)


def _binary(config: dict[str, Any], value: str) -> str:
    on = payload_text(config.get("state_on", config.get("payload_on", "ON")))
    off = payload_text(config.get("state_off", config.get("payload_off", "OFF")))
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
    available = payload_text(item.get("payload_available", config.get("payload_available", "online")))
    missing = payload_text(item.get("payload_not_available", config.get("payload_not_available", "offline")))
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
        if value == payload_text(config.get(key, state)):
            reading.state = state
            return
    if value in (payload_text(config.get("payload_open", "OPEN")), payload_text(config.get("payload_close", "CLOSE"))):
        reading.state = "open" if value == payload_text(config.get("payload_open", "OPEN")) else "closed"
        return
    raise templates.TemplateProblem(f"{value[:60]!r} is not a cover state it declares")


def _position(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _number(_value(config, "position_template", variables))
    closed, opened = float(config.get("position_closed", 0)), float(config.get("position_open", 100))
    reading.attributes["position"] = _scaled(value, closed, opened)


def _state_lock(config: dict[str, Any], variables: dict[str, Any], reading: Reading) -> None:
    value = _value(config, "value_template", variables)
    for key, (default, state) in LOCK_STATES.items():
        if value == payload_text(config.get(key, default)):
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
