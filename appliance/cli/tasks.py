"""`appliance tasks ...`: create, list, show, cancel, retry, approve and reject tasks (docs/tasks.md).

Thin adapters over the tasks.* commands, as the box's console (admin); every reply is printed as JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.base import actions, json_object, simple_action

KINDS = ["action", "command", "search", "ask", "notify"]
STATES = ["queued", "running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"]


def register(commands: Any) -> None:
    group = actions(commands, "tasks", "tasks: actions, inline commands, search, ask, notify")
    simple_action(group, "create", "queue a task (an inline command line: --kind command -- PROGRAM ARGS...)",
                  "tasks.create",
                  ("--kind", {"choices": KINDS, "required": True}),
                  ("--action", {"help": "a declared or built-in action"}),
                  ("--args", {"type": json_object, "help": "the action's arguments, a JSON object"}),
                  ("argv", {"nargs": "*", "default": argparse.SUPPRESS, "metavar": "ARGV",
                            "help": "a command task's program and arguments, after --; no shell sees them"}),
                  ("--query", {"help": "search / ask"}), ("--message", {"help": "notify"}),
                  ("--topic", {"help": "notify: the MQTT topic"}),
                  ("--output-path", {"dest": "output_path", "help": "search: where the report is written"}),
                  ("--timeout", {"type": float, "dest": "timeout_s"}),
                  ("--attempts", {"type": int, "dest": "max_attempts"}))
    simple_action(group, "list", "tasks, newest first", "tasks.list",
                  ("--state", {"choices": STATES, "action": "append"}), ("--schedule", {}),
                  ("--kind", {"choices": KINDS}), ("--limit", {"type": int, "default": 50}),
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
