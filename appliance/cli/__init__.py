"""The `appliance` command: one module per command group, each registering its own handlers.

    appliance [--config PATH] GROUP [ACTION] ...

Each group module's ``register(commands)`` adds its parsers and binds every action to its
handler with ``set_defaults(handler=...)``, so routing is by parser, never by action name.
Exit codes are documented in cli/base.py.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from appliance.cli import (
    agent,
    backup,
    capabilities,
    chat,
    config,
    devices,
    engine,
    entities,
    memory,
    models,
    schedules,
    services,
    tasks,
    tokens,
    update,
)
from appliance.cli.base import EXIT_BAD_INPUT, CliError
from appliance.config import ConfigError, load_config, resolve_config_path
from appliance.taskkinds.action import check_config as check_actions

GROUPS = (services, config, tokens, models, engine, memory, chat, agent, devices, entities, tasks, schedules,
          capabilities, update, backup)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="appliance", description="Edge AI agent appliance")
    root.add_argument("--config", metavar="PATH",
                      help="YAML config file (default: $APPLIANCE_CONFIG or config/agent.yaml)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return root


def main(argv: list[str] | None = None) -> NoReturn:
    args = parser().parse_args(argv)
    config_path = resolve_config_path(args.config)
    try:
        loaded = load_config(config_path)
        check_actions(loaded)  # a declared action may not take a built-in's name
    except ConfigError as exc:
        sys.stderr.write(f"appliance: config error: {exc}\n")
        sys.exit(EXIT_BAD_INPUT)
    args.config_path = config_path
    try:
        code = args.handler(loaded, args)
    except CliError as exc:
        sys.stderr.write(f"appliance: {exc}\n")
        code = exc.code
    sys.exit(code)
