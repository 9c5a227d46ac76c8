"""`appliance config check|show`: validate the configuration, or print it with secrets redacted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from appliance.cli.base import actions
from appliance.config import ApplianceConfig


def register(commands: Any) -> None:
    group = actions(commands, "config", "validate or print the configuration")
    group.add_parser("check", help="validate the config file; exit 2 naming the bad key").set_defaults(handler=_check)
    group.add_parser("show", help="print the effective config, secrets redacted").set_defaults(handler=_show)


def _check(_: ApplianceConfig, args: argparse.Namespace) -> int:
    sys.stdout.write(f"{args.config_path}: ok\n")  # loading it already validated it
    return 0


def _show(config: ApplianceConfig, _: argparse.Namespace) -> int:
    sys.stdout.write(yaml.safe_dump(config.redacted(), sort_keys=False))
    return 0
