"""`appliance schedules ...`: list, show, add, replace and delete schedules (docs/tasks.md).

Thin adapters over the schedules.* commands, as the box's console (admin: what is saved here runs
with the admin role); every reply is printed as JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.base import actions, json_object, print_json, run_command, simple_action
from appliance.config import ApplianceConfig


def register(commands: Any) -> None:
    group = actions(commands, "schedules", "schedules: the file's (read-only) and the saved ones")
    simple_action(group, "list", "every schedule with its last and next fire", "schedules.list")
    simple_action(group, "show", "one schedule", "schedules.get", ("name", {"metavar": "NAME"}))
    for verb, command, text in (("add", "schedules.create", "save a new schedule"),
                                ("replace", "schedules.replace", "replace a saved schedule")):
        parser = group.add_parser(verb, help=text)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--trigger", required=True,
                            help="cron:<5 fields>, interval:5m, at:<ISO time>, mqtt:<filter>")
        parser.add_argument("--action", required=True, help="a built-in or declared action, or a command line")
        parser.add_argument("--fallback", help="what runs when the action finally fails")
        parser.add_argument("--with", dest="more", type=json_object, default={},
                            help="the other keys as a JSON object, e.g. {\"retries\": 2, \"missed\": \"skip\"}")
        parser.set_defaults(handler=lambda config, args, command=command: _save(config, command, args))
    simple_action(group, "delete", "delete a saved schedule", "schedules.delete", ("name", {"metavar": "NAME"}))


def _save(config: ApplianceConfig, command: str, args: argparse.Namespace) -> int:
    body = {**args.more, "name": args.name, "trigger": args.trigger, "action": args.action}
    if args.fallback is not None:
        body["fallback"] = args.fallback
    print_json(run_command(config, command, body))
    return 0
