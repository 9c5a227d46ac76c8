"""`appliance serve|run|status|sandbox-helper`: one service as systemd runs it, all five supervised, their
health, and the agent's privileged sandbox helper (appliance/agent/helper.py)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from typing import Any, NoReturn

from appliance.cli.base import EXIT_BAD_INPUT
from appliance.config import ApplianceConfig, ConfigError
from appliance.protocol.common import HEALTH, ServiceName
from appliance.protocol.services import BY_NAME, SERVICE_NAMES


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run one service in the foreground (what systemd starts)")
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(handler=_serve)
    commands.add_parser("run", help="run all five services under the development supervisor").set_defaults(
        handler=_run)
    commands.add_parser("status", help="ask each service for its health over IPC").set_defaults(handler=_status)
    helper = commands.add_parser("sandbox-helper", help="run one sandboxed action for the agent, on the connection "
                                 "systemd passes as stdin (appliance-sandbox@.service)")
    helper.add_argument("--private-network", action="store_true",
                        help="the unit already has a network namespace of its own (PrivateNetwork=yes)")
    helper.set_defaults(handler=_sandbox_helper)


def _serve(config: ApplianceConfig, args: argparse.Namespace) -> NoReturn:
    from appliance.runtime.logs import setup_logging
    from appliance.runtime.service import run_service

    name: ServiceName = args.service
    setup_logging(f"appliance-{name}", config.logging.level)
    module, _, cls = BY_NAME[name].entry.partition(":")
    try:
        service = getattr(importlib.import_module(module), cls)(config)
    except ConfigError as exc:  # a file the service reads besides the config (the agent's schedules)
        sys.stderr.write(f"appliance {name}: config error: {exc}\n")
        os._exit(EXIT_BAD_INPUT)
    code = asyncio.run(run_service(service))
    logging.shutdown()
    # Daemon threads may still sit in llama.cpp; everything durable is closed by now.
    os._exit(code)


def _run(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.runtime.logs import setup_logging
    from appliance.supervisor.run import run_supervisor

    setup_logging("appliance-supervisor", config.logging.level)
    return run_supervisor(args.config_path, config)


def _sandbox_helper(config: ApplianceConfig, args: argparse.Namespace) -> int:
    import socket

    from appliance.agent.helper import serve_connection, workspaces_folder
    from appliance.runtime.logs import setup_logging

    setup_logging("appliance-sandbox", config.logging.level)
    connection = socket.socket(fileno=sys.stdin.fileno())  # Accept=yes: the agent's connection
    asyncio.run(serve_connection(connection, workspaces_folder(config.paths.state_dir),
                                 private_network=args.private_network))
    return 0


def _status(config: ApplianceConfig, _: argparse.Namespace) -> int:
    from appliance.ipc.errors import IpcError
    from appliance.ipc.peers import Peers

    async def everyone() -> list[str]:
        peers = Peers(config, timeout_s=3.0)

        async def ask(name: ServiceName) -> str:
            try:
                health = await peers.client(name).call(HEALTH)
                return f"{name:<7} {health.state.value:<9} {health.uptime_s:>9.1f}s  {health.detail}"
            except IpcError as exc:
                return f"{name:<7} {'down':<9} {'-':>10}  {exc}"

        try:
            return list(await asyncio.gather(*(ask(n) for n in SERVICE_NAMES)))
        finally:
            await peers.close()

    lines = asyncio.run(everyone())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(" ready " in line for line in lines) else 1
