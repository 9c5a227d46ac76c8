"""The `appliance` command: run services, supervise them, check config, make tokens and models.

Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import sys
from typing import NoReturn

import yaml

from appliance import cli_memory, cli_model
from appliance.config import ApplianceConfig, ConfigError, load_config, resolve_config_path
from appliance.protocol.common import ServiceName
from appliance.protocol.services import BY_NAME, SERVICE_NAMES

SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Edge AI agent appliance")
    parser.add_argument("--config", metavar="PATH",
                        help="YAML config file (default: $APPLIANCE_CONFIG or config/agent.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run one service in the foreground (what systemd starts)")
    serve.add_argument("service", choices=SERVICE_NAMES)
    commands.add_parser("run", help="run all five services under the development supervisor")
    commands.add_parser("status", help="ask each service for its health over IPC")

    config = commands.add_parser("config", help="validate or print the configuration")
    config_actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_actions.add_parser("check", help="validate the config file; exit 2 naming the bad key")
    config_actions.add_parser("show", help="print the effective config, secrets redacted")

    token = commands.add_parser("token", help="access tokens for the control plane")
    token_actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_actions.add_parser("create", help="print a signed token on the last line")
    create.add_argument("--role", required=True, choices=["admin", "operator", "viewer"])
    create.add_argument("--subject", default="admin", help="who the token is for (default: admin)")
    create.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                        help="lifetime (default: security.token_ttl_s)")

    model = commands.add_parser("model", help="models on this box")
    model_actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    demo = model_actions.add_parser("demo", help="write tiny random-weight demo models where none are")
    demo.add_argument("--force", action="store_true", help="overwrite existing files")
    cli_model.add_parsers(model_actions)
    engine = commands.add_parser("engine", help="the inference engine")
    engine_actions = engine.add_subparsers(dest="action", required=True, metavar="ACTION")
    engine_actions.add_parser("probe", help="print the hardware the engine would plan for (JSON)")
    plan = engine_actions.add_parser("plan", help="print the settings the tuner picks for the chat model, and why")
    plan.add_argument("--model", metavar="PATH", help="a GGUF file (default: the configured chat model)")
    plan.add_argument("--hardware", metavar="JSON", help="plan for the box described by a saved `engine probe`")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    cli_memory.add_parsers(commands)
    return parser


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"appliance: {message}\n")
    sys.exit(code)


def _serve(config: ApplianceConfig, name: ServiceName) -> NoReturn:
    from appliance.runtime.logs import setup_logging
    from appliance.runtime.service import run_service

    setup_logging(f"appliance-{name}", config.logging.level)
    module, _, cls = BY_NAME[name].entry.partition(":")
    service = getattr(importlib.import_module(module), cls)(config)
    code = asyncio.run(run_service(service))
    logging.shutdown()
    # Daemon threads may still sit in llama.cpp; everything durable is closed by now.
    os._exit(code)


def _status(config: ApplianceConfig) -> int:
    from appliance.ipc.client import IpcClient
    from appliance.ipc.errors import IpcError
    from appliance.protocol.common import HEALTH

    async def ask(name: ServiceName) -> str:
        client = IpcClient(name, config.socket_path(name), timeout_s=3.0)
        try:
            health = await client.call(HEALTH)
            return f"{name:<7} {health.state.value:<9} {health.uptime_s:>9.1f}s  {health.detail}"
        except IpcError as exc:
            return f"{name:<7} {'down':<9} {'-':>10}  {exc}"
        finally:
            await client.close()

    async def everyone() -> list[str]:
        return list(await asyncio.gather(*(ask(n) for n in SERVICE_NAMES)))

    lines = asyncio.run(everyone())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(" ready " in line for line in lines) else 1


def _token(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.api.auth import Role, TokenAuthority

    if not SUBJECT.fullmatch(args.subject):
        _fail(f"--subject: {args.subject[:40]!r} is not 1-128 of [A-Za-z0-9._@:-]")
    ttl = config.security.token_ttl_s if args.ttl is None else args.ttl
    if not 60 <= ttl <= 365 * 86_400:
        _fail(f"--ttl: must be between 60 and {365 * 86_400} seconds, got {ttl}")
    authority = TokenAuthority.from_config(config)
    token = authority.issue(args.subject, Role(args.role), ttl)
    sys.stderr.write(f"token for {args.subject} ({args.role}, {authority.algorithm}), valid {ttl} s:\n")
    sys.stdout.write(token + "\n")
    return 0


def _demo_models(config: ApplianceConfig, force: bool) -> int:
    from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama

    try:
        wanted = [(config.chat_model_path, CHAT_SHAPE, "demo-chat"),
                  (config.embedding_model_path, embedding_shape(config.memory.vector_dim), "demo-embedding")]
    except ValueError as exc:
        _fail(f"memory.vector_dim: {exc}")
    for seed, (path, shape, name) in enumerate(wanted):
        if path.exists() and not force:
            sys.stdout.write(f"kept {path} (exists)\n")
            continue
        write_tiny_llama(path, shape, seed=seed, name=name)
        sys.stdout.write(f"wrote {path}: {name}, random weights - its output is noise\n")
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    config_path = resolve_config_path(args.config)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(f"config error: {exc}")

    if args.command == "serve":
        _serve(config, args.service)
    if args.command == "config":
        if args.action == "show":
            sys.stdout.write(yaml.safe_dump(config.redacted(), sort_keys=False))
        else:
            sys.stdout.write(f"{config_path}: ok\n")
        sys.exit(0)
    if args.command == "run":
        from appliance.runtime.logs import setup_logging
        from appliance.supervisor.run import run_supervisor

        setup_logging("appliance-supervisor", config.logging.level)
        sys.exit(run_supervisor(config_path, config))
    if args.command == "status":
        sys.exit(_status(config))
    if args.command == "token":
        sys.exit(_token(config, args))
    if args.command == "engine":
        from appliance.cli_engine import plan_command, probe_command

        sys.exit(plan_command(config, args) if args.action == "plan" else probe_command())
    if args.command in ("memory", "audit"):
        try:
            sys.exit(cli_memory.run(config, args))
        except cli_memory.CliError as exc:
            _fail(str(exc), exc.code)
    if args.action in ("import", "list"):
        sys.exit(cli_model.run(config, args))
    sys.exit(_demo_models(config, args.force))
