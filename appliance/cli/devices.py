"""`appliance devices ...` and `appliance outbox ...`: the site's devices and what waits to go upstream.

Thin adapters over the devices.* and outbox.* commands; every reply is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.cli.base import actions, json_object, simple_action


def _json_value(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at character {exc.pos})") from None


def register(commands: Any) -> None:
    group = actions(commands, "devices", "the site's devices over MQTT")
    simple_action(group, "list", "the registry: last seen, event count, availability", "devices.list",
                  ("--online", {"action": argparse.BooleanOptionalAction, "default": None}),
                  ("--prefix", {"help": "device ids starting with this"}),
                  ("--limit", {"type": int, "default": 50}), ("--cursor", {}))
    simple_action(group, "show", "one device with its recent events", "devices.get",
                  ("device_id", {"metavar": "DEVICE"}), ("--events", {"type": int, "default": 20}))
    simple_action(group, "command", "send a command (QoS 1) and wait for the device's answer", "devices.command",
                  ("device_id", {"metavar": "DEVICE"}), ("command", {"metavar": "COMMAND"}),
                  ("--args", {"type": json_object, "help": "a JSON object"}),
                  ("--wait", {"type": float, "dest": "wait_s", "help": "seconds to wait for the answer (0: do not)"}))
    simple_action(group, "quarantine", "messages that could not be events, with the reason", "devices.quarantine",
                  ("--kind", {}), ("--device", {}), ("--limit", {"type": int, "default": 50}), ("--cursor", {}))

    outbox = actions(commands, "outbox", "what waits to go upstream when the network is up")
    simple_action(outbox, "status", "how many items wait, and how old the oldest is", "outbox.status")
    simple_action(outbox, "enqueue", "queue one item for an uplink target", "outbox.enqueue",
                  ("target", {"choices": ["mqtt", "webhook"]}), ("topic", {}),
                  ("payload", {"type": _json_value, "help": "JSON"}))
