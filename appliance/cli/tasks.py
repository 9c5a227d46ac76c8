"""`appliance tasks ...`: create, list, show, cancel, retry, approve and reject tasks (docs/tasks.md).

Thin adapters over the tasks.* commands, as the box's console (admin); every reply is printed as JSON.
``create``'s options are the task kinds' own fields, read from their declarations (appliance/taskkinds/):
a list of strings is the positional ARGV (after --), a JSON object an option that takes JSON, the rest
options of their type. A new kind's fields appear here without a change to this file.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from appliance.cli.base import actions, json_object, simple_action
from appliance.protocol.tasks import TaskState
from appliance.taskkinds import KINDS

STATES = [state.value for state in TaskState]


def _kind_options() -> list[tuple[str, dict[str, Any]]]:
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for kind in KINDS.values():
        for name, info in kind.fields.model_fields.items():
            if name in seen:
                continue
            annotation = info.annotation
            options: dict[str, Any] = {"help": f"{kind.name}: {info.description or name}"}
            union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
            base = {arg for arg in typing.get_args(annotation) if arg is not type(None)} if union else {annotation}
            if any(typing.get_origin(arg) is list for arg in base):
                seen[name] = (name, {"nargs": "*", "default": argparse.SUPPRESS, "metavar": name.upper(),
                                     "help": f"{kind.name}: {info.description}, after --; no shell sees them"})
                continue
            if any(typing.get_origin(arg) is dict for arg in base):
                options["type"] = json_object
            elif int in base or float in base:
                options["type"] = float if float in base else int
            seen[name] = (f"--{name.replace('_', '-')}", {**options, "dest": name})
    return list(seen.values())


def register(commands: Any) -> None:
    group = actions(commands, "tasks", "tasks: " + ", ".join(KINDS))
    simple_action(group, "create", "queue a task (a command line: --kind shell -- PROGRAM ARGS...)", "tasks.create",
                  ("--kind", {"choices": sorted(KINDS), "required": True}),
                  *_kind_options(),
                  ("--timeout", {"type": float, "dest": "timeout_s"}),
                  ("--attempts", {"type": int, "dest": "max_attempts"}))
    simple_action(group, "list", "tasks, newest first", "tasks.list",
                  ("--state", {"choices": STATES, "action": "append"}), ("--schedule", {}),
                  ("--kind", {"choices": sorted(KINDS)}), ("--limit", {"type": int, "default": 50}),
                  ("--cursor", {"type": int}))
    simple_action(group, "show", "one task with its step log", "tasks.get", ("id", {"type": int, "metavar": "ID"}),
                  ("--after-seq", {"type": int, "dest": "after_seq", "help": "only steps after this number"}))
    simple_action(group, "cancel", "cancel a queued task or stop a running one", "tasks.cancel",
                  ("id", {"type": int, "metavar": "ID"}))
    simple_action(group, "retry", "run a failed, cancelled or timed-out task again", "tasks.retry",
                  ("id", {"type": int, "metavar": "ID"}))
    for name, summary in (("approve", "let a task waiting for approval run"),
                          ("reject", "refuse a task waiting for approval (it is cancelled)")):
        simple_action(group, name, summary, f"tasks.{name}", ("id", {"type": int, "metavar": "ID"}),
                      ("--reason", {"default": "", "help": "why, kept in the task's step log"}))
