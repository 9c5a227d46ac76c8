"""Home Assistant MQTT discovery read the way Home Assistant reads it: a config message becomes entities.

Topics: ``<prefix>/<component>/[<node_id>/]<object_id>/config`` (one entity), and device-based
``<prefix>/device/<object_id>/config`` whose ``components`` (``cmps``) each name their platform
(``p``) and share the device, origin and any top-level options. Keys may be abbreviated
(``stat_t``, ``cmd_t``, ``dev``...; ABBREVIATIONS), and values starting or ending with ``~``
take the config's base topic there. An empty payload removes what the topic had announced.

What is refused, with the reason, before anything is registered: a payload that is not UTF-8
JSON of an object, or larger than MAX_CONFIG_BYTES; a component this box does not know; a
missing required key (a state topic for read-only components, a command topic for commands); a
topic with a wildcard, NUL or over 256 characters; a command topic under the discovery prefix
or the box's own topics (a config cannot make the box command itself); a template the box will
not run (templates.py): that one is reported per entity and the rest of the entity is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.site import templates

MAX_CONFIG_BYTES = 16 * 1024
MAX_COMPONENTS = 256  # per device-based config
MAX_TOPIC = 256
COMPONENTS = ("sensor", "binary_sensor", "switch", "light", "fan", "cover", "lock", "climate", "button", "number",
              "select", "text", "event")
# Home Assistant's abbreviations of the keys this box reads (the discovery docs' list).
ABBREVIATIONS = {
    "act_t": "action_topic", "act_tpl": "action_template", "avty": "availability", "avty_mode": "availability_mode",
    "avty_t": "availability_topic", "avty_tpl": "availability_template", "bri_cmd_t": "brightness_command_topic",
    "bri_cmd_tpl": "brightness_command_template", "bri_scl": "brightness_scale",
    "bri_stat_t": "brightness_state_topic", "bri_val_tpl": "brightness_value_template", "brightness": "brightness",
    "clr_temp_cmd_t": "color_temp_command_topic", "clr_temp_cmd_tpl": "color_temp_command_template",
    "clr_temp_stat_t": "color_temp_state_topic", "clr_temp_val_tpl": "color_temp_value_template",
    "cmd_t": "command_topic", "cmd_tpl": "command_template", "cmps": "components",
    "curr_temp_t": "current_temperature_topic", "curr_temp_tpl": "current_temperature_template", "dev": "device",
    "dev_cla": "device_class", "ent_cat": "entity_category", "evt_typ": "event_types", "json_attr_t":
    "json_attributes_topic", "json_attr_tpl": "json_attributes_template", "max_mirs": "max_mireds",
    "min_mirs": "min_mireds", "max_temp": "max_temp", "min_temp": "min_temp", "mode_cmd_t": "mode_command_topic",
    "mode_cmd_tpl": "mode_command_template", "mode_stat_t": "mode_state_topic", "mode_stat_tpl": "mode_state_template",
    "modes": "modes", "o": "origin", "obj_id": "object_id", "def_ent_id": "default_entity_id", "ops": "options",
    "opt": "optimistic", "p": "platform", "pct_cmd_t": "percentage_command_topic",
    "pct_cmd_tpl": "percentage_command_template", "pct_stat_t": "percentage_state_topic",
    "pct_val_tpl": "percentage_value_template", "pl_avail": "payload_available", "pl_cls": "payload_close",
    "pl_lock": "payload_lock", "pl_not_avail": "payload_not_available", "pl_off": "payload_off", "pl_on": "payload_on",
    "pl_open": "payload_open", "pl_prs": "payload_press", "pl_stop": "payload_stop", "pl_unlk": "payload_unlock",
    "pos_clsd": "position_closed", "pos_open": "position_open", "pos_t": "position_topic",
    "pos_tpl": "position_template", "pow_cmd_t": "power_command_topic", "pr_mode_cmd_t": "preset_mode_command_topic",
    "pr_mode_stat_t": "preset_mode_state_topic", "pr_mode_val_tpl": "preset_mode_value_template",
    "pr_modes": "preset_modes", "ret": "retain", "set_pos_t": "set_position_topic",
    "set_pos_tpl": "set_position_template", "spd_rng_max": "speed_range_max", "spd_rng_min": "speed_range_min",
    "stat_cla": "state_class", "stat_clsd": "state_closed", "stat_closing": "state_closing",
    "stat_jam": "state_jammed", "stat_locked": "state_locked", "stat_locking": "state_locking", "stat_off": "state_off",
    "stat_on": "state_on", "stat_open": "state_open", "stat_opening": "state_opening",
    "stat_stopped": "state_stopped", "stat_t": "state_topic", "stat_tpl": "state_template",
    "stat_unlocked": "state_unlocked", "stat_unlocking": "state_unlocking", "stat_val_tpl": "state_value_template",
    "sup_clrm": "supported_color_modes", "t": "topic", "temp_cmd_t": "temperature_command_topic",
    "temp_cmd_tpl": "temperature_command_template", "temp_stat_t": "temperature_state_topic",
    "temp_stat_tpl": "temperature_state_template", "temp_unit": "temperature_unit", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template", "ic": "icon", "en": "enabled_by_default",
    "pl": "payload", "e": "encoding", "qos": "qos", "sa": "suggested_area", "dev_ids": "identifiers",
}
DEVICE_ABBREVIATIONS = {"cns": "connections", "cu": "configuration_url", "ids": "identifiers", "mf": "manufacturer",
                        "mdl": "model", "mdl_id": "model_id", "sw": "sw_version", "hw": "hw_version",
                        "sa": "suggested_area", "sn": "serial_number", "via_device": "via_device", "name": "name"}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url", "name": "name"}
# What each component needs: at least one of each tuple's keys.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "sensor": (("state_topic",),), "binary_sensor": (("state_topic",),), "event": (("state_topic",),
                                                                                   ("event_types",)),
    "switch": (("command_topic",),), "light": (("command_topic",),), "fan": (("command_topic",),),
    "cover": (("command_topic", "set_position_topic", "state_topic", "position_topic"),),
    "lock": (("command_topic",),), "button": (("command_topic",),), "number": (("command_topic",),),
    "select": (("command_topic",), ("options",)), "text": (("command_topic",),),
    "climate": (("mode_command_topic", "temperature_command_topic", "power_command_topic", "mode_state_topic",
                 "temperature_state_topic", "current_temperature_topic"),),
}
TEMPLATE_KEYS = ("value_template", "command_template", "state_value_template", "brightness_value_template",
                 "brightness_command_template", "color_temp_value_template", "color_temp_command_template",
                 "percentage_value_template", "percentage_command_template", "preset_mode_value_template",
                 "position_template", "set_position_template", "mode_state_template", "mode_command_template",
                 "temperature_state_template", "temperature_command_template", "current_temperature_template",
                 "json_attributes_template", "availability_template", "action_template")
_TOPIC = re.compile(r"^(?P<component>[a-z_]+)/(?:(?P<node>[A-Za-z0-9_-]+)/)?(?P<object>[A-Za-z0-9_-]+)/config$")


class DiscoveryRefused(ValueError):
    """A config this box will not register; the message says what is wrong and where."""


@dataclass(frozen=True)
class Announced:
    """One entity a config announces: its component, its key (the discovery topic and, for a device-based
    config, the component's id), its normalized config, and the device it belongs to."""

    key: str
    component: str
    object_id: str
    config: dict[str, Any]
    device: dict[str, Any]
    origin: str
    problems: list[str] = field(default_factory=list)  # templates that will not run, per key


@dataclass(frozen=True)
class Discovery:
    """What one config message says: the entities it announces now (none: what it announced is removed)."""

    topic: str
    entities: list[Announced]


def expand(raw: dict[str, Any], table: dict[str, str] = ABBREVIATIONS) -> dict[str, Any]:
    return {table.get(key, key): value for key, value in raw.items()}


def _with_base(config: dict[str, Any]) -> dict[str, Any]:
    """Values that start or end with ``~`` take the base topic there (Home Assistant's rule)."""
    base = config.pop("~", None)
    if not isinstance(base, str) or not base:
        return config
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str) and key.endswith("topic"):
            if value.startswith("~"):
                value = base + value[1:]
            elif value.endswith("~"):
                value = value[:-1] + base
        out[key] = value
    if isinstance(out.get("availability"), list):
        out["availability"] = [_with_base({"~": base, **item}) if isinstance(item, dict) else item
                               for item in out["availability"]]
    return out


def check_topic(topic: Any, key: str, *, command: bool, forbidden: Iterable[str]) -> str:
    if not isinstance(topic, str) or not topic:
        raise DiscoveryRefused(f"{key}: a topic is a non-empty string")
    if len(topic) > MAX_TOPIC or "\x00" in topic or "+" in topic or "#" in topic:
        raise DiscoveryRefused(f"{key}: {topic[:80]!r} is not a topic (wildcard, NUL or over {MAX_TOPIC} characters)")
    if command:
        for prefix in forbidden:
            if topic == prefix or topic.startswith(prefix.rstrip("/") + "/"):
                raise DiscoveryRefused(f"{key}: {topic[:80]!r} is under {prefix!r}: a config may not make the box "
                                       "publish on the discovery prefix or the box's own topics")
    return topic


def _normalized(component: str, raw: dict[str, Any], forbidden: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    config = _with_base(expand(raw))
    config.pop("platform", None)
    for needed in REQUIRED[component]:
        if not any(config.get(name) not in (None, "", []) for name in needed):
            raise DiscoveryRefused(f"{' or '.join(needed)}: required for a {component}")
    for key in [k for k in config if k.endswith("_topic")]:
        if config[key] is None:
            config.pop(key)
            continue
        config[key] = check_topic(config[key], key, command=key.endswith("command_topic") or key in (
            "set_position_topic",), forbidden=forbidden)
    availability = config.get("availability")
    if availability is not None:
        if not isinstance(availability, list) or len(availability) > 16:
            raise DiscoveryRefused("availability: a list of at most 16 {topic, payload_available, ...}")
        config["availability"] = [_availability(item, n) for n, item in enumerate(availability)]
    problems = []
    for key in TEMPLATE_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DiscoveryRefused(f"{key}: a template is a string")
        if (why := templates.check(value)) is not None:
            problems.append(f"{key}: {why}")
    for key in ("options", "modes", "event_types", "preset_modes", "supported_color_modes"):
        if key in config and (not isinstance(config[key], list) or len(config[key]) > 256
                              or not all(isinstance(o, str) and len(o) <= 256 for o in config[key])):
            raise DiscoveryRefused(f"{key}: a list of at most 256 strings")
    for key in ("min", "max", "step", "min_temp", "max_temp", "temp_step", "precision", "brightness_scale",
                "speed_range_min", "speed_range_max", "position_open", "position_closed", "min_mireds",
                "max_mireds"):
        if key in config:
            config[key] = _number(config[key], key)
    return config, problems


def _availability(item: Any, n: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DiscoveryRefused(f"availability[{n}]: an object with a topic")
    item = expand(item)
    topic = check_topic(item.get("topic"), f"availability[{n}].topic", command=False, forbidden=())
    return {"topic": topic, **{k: item[k] for k in ("payload_available", "payload_not_available", "value_template")
                               if k in item}}


def _number(value: Any, key: str) -> float:
    try:
        number = float(value)  # bridges send some as strings ("min_temp": "5")
    except (TypeError, ValueError):
        raise DiscoveryRefused(f"{key}: {str(value)[:40]!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DiscoveryRefused(f"{key}: not a finite number")
    return number


def _device(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DiscoveryRefused("device: an object")
    device = expand(raw, DEVICE_ABBREVIATIONS)
    identifiers = device.get("identifiers")
    if isinstance(identifiers, str):
        device["identifiers"] = [identifiers]
    elif identifiers is not None and not (isinstance(identifiers, list)
                                          and all(isinstance(i, str) for i in identifiers)):
        raise DiscoveryRefused("device.identifiers: a string or a list of strings")
    for key in ("name", "manufacturer", "model", "suggested_area", "sw_version", "via_device"):
        if key in device and device[key] is not None and not isinstance(device[key], str):
            raise DiscoveryRefused(f"device.{key}: a string")
    return {k: v for k, v in device.items() if k in ("identifiers", "connections", "name", "manufacturer", "model",
                                                      "suggested_area", "sw_version", "via_device")}


def _origin(raw: Any) -> str:
    if isinstance(raw, dict):
        name = expand(raw, ORIGIN_ABBREVIATIONS).get("name")
        return name[:64] if isinstance(name, str) else ""
    return ""


def parse(prefix: str, topic: str, payload: bytes, *, forbidden: Iterable[str] = ()) -> Discovery:
    """The entities a discovery message announces; DiscoveryRefused saying why it cannot be read.
    ``forbidden``: topic prefixes no command may go to (the discovery prefix is always one)."""
    rest = topic[len(prefix) + 1:] if topic.startswith(prefix + "/") else ""
    match = _TOPIC.match(rest)
    if match is None:
        raise DiscoveryRefused(f"{topic[:120]!r} is not {prefix}/<component>/[<node_id>/]<object_id>/config")
    component, node, object_id = match["component"], match["node"], match["object"]
    if not payload.strip():
        return Discovery(topic, [])  # removed
    if len(payload) > MAX_CONFIG_BYTES:
        raise DiscoveryRefused(f"a config of {len(payload)} bytes; at most {MAX_CONFIG_BYTES}")
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DiscoveryRefused(f"not UTF-8 JSON: {str(exc)[:120]}") from None
    if not isinstance(raw, dict):
        raise DiscoveryRefused(f"a config is a JSON object, not {type(raw).__name__}")
    forbidden = (prefix, *forbidden)
    if component == "device":
        return Discovery(topic, _device_based(topic, object_id, node, raw, forbidden))
    if component not in COMPONENTS:
        raise DiscoveryRefused(f"component {component!r} is not one this box reads ({', '.join(COMPONENTS)})")
    config, problems = _normalized(component, raw, forbidden)
    device = _device(config.pop("device", None))
    origin = _origin(config.pop("origin", None))
    return Discovery(topic, [Announced(topic, component, str(config.get("object_id") or object_id), config, device,
                                       origin, problems)])


def _device_based(topic: str, object_id: str, node: str | None, raw: dict[str, Any],
                  forbidden: tuple[str, ...]) -> list[Announced]:
    shared = expand(raw)
    components = shared.pop("components", None)
    if not isinstance(components, dict) or not components:
        raise DiscoveryRefused("components: a device-based config lists its components")
    if len(components) > MAX_COMPONENTS:
        raise DiscoveryRefused(f"components: {len(components)}; at most {MAX_COMPONENTS} in one config")
    device = _device(shared.pop("device", None))
    if not device.get("identifiers") and not device.get("connections"):
        raise DiscoveryRefused("device.identifiers: a device-based config names its device")
    origin = _origin(shared.pop("origin", None))
    announced = []
    for key, body in components.items():
        if not isinstance(body, dict):
            raise DiscoveryRefused(f"components.{str(key)[:40]}: an object")
        merged = {**{k: v for k, v in shared.items() if k not in ("device", "origin")}, **body}
        platform = expand(body).get("platform")
        if platform not in COMPONENTS:
            raise DiscoveryRefused(f"components.{str(key)[:40]}.platform: {str(platform)[:40]!r} is not one of "
                                   f"{', '.join(COMPONENTS)}")
        try:
            config, problems = _normalized(platform, merged, forbidden)
        except DiscoveryRefused as exc:
            raise DiscoveryRefused(f"components.{str(key)[:40]}.{exc}") from None
        announced.append(Announced(f"{topic}#{key}", platform, str(config.get("object_id") or key), config, device,
                                   origin, problems))
    return announced
