"""`appliance entities list|show|set`: the site's entities, one with its history, and commands by entity.

Thin adapters over the entities.* commands; every reply is printed as JSON. ``set`` takes the
entity by id or name and the action, with its arguments as --args JSON or the common ones as
options: ``appliance entities set hall_fan turn_on``, ``appliance entities set thermostat
set_temperature --temperature 21.5``. Exit 0 only when the outcome is confirmed (or unconfirmed:
published, the state did not show it in time: exit 1 then, and refused: exit 3).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.cli.base import (
    EXIT_FAILED,
    EXIT_REFUSED,
    actions,
    fail,
    json_object,
    print_json,
    run_command,
    simple_action,
)
from appliance.config import ApplianceConfig

OPTIONS = ("value", "brightness", "color_temp", "temperature", "mode")


def _value(text: str) -> Any:
    """A number when it reads as one, else the text (--value 40, --value "Dinner mode")."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    return parsed if isinstance(parsed, int | float | bool) else text


def register(commands: Any) -> None:
    group = actions(commands, "entities", "the site's entities: devices and sensors from MQTT discovery")
    simple_action(group, "list", "entities with their states", "entities.list",
                  ("--component", {}), ("--area", {}), ("--q", {"help": "words in the id, name or area"}),
                  ("--limit", {"type": int, "default": 500}), ("--cursor", {}))
    simple_action(group, "show", "one entity with its state history", "entities.get",
                  ("entity_id", {"metavar": "ENTITY", "help": "an id (switch.hall_fan) or a name"}),
                  ("--history", {"type": int, "default": 20}))
    setting = group.add_parser("set", help="command an entity and wait for its new state")
    setting.add_argument("entity_id", metavar="ENTITY", help="an id (switch.hall_fan) or a name")
    setting.add_argument("action", metavar="ACTION", help="turn_on, turn_off, toggle, set_value, lock, ...")
    setting.add_argument("--args", type=json_object, default={}, help="the action's arguments, a JSON object")
    for name in OPTIONS:
        setting.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_value, help=f"args.{name}")
    setting.add_argument("--wait", type=float, dest="wait_s", help="seconds to wait for the state (0: do not)")
    setting.set_defaults(handler=_set)


def _set(config: ApplianceConfig, args: argparse.Namespace) -> int:
    given = dict(args.args)
    given.update({name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None})
    payload: dict[str, Any] = {"entity_id": args.entity_id, "action": args.action, "args": given}
    if args.wait_s is not None:
        payload["wait_s"] = args.wait_s
    reply = run_command(config, "entities.set", payload)
    print_json(reply)
    outcome = reply.outcome  # type: ignore[attr-defined]
    if outcome == "refused":
        fail(f"refused: {reply.reason}", EXIT_REFUSED)  # type: ignore[attr-defined]
    return 0 if outcome == "confirmed" else EXIT_FAILED
