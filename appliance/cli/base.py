"""What every command group of the CLI shares: the error type and exit codes, local dispatch, output.

Exit codes, the same for every command:

    0  done
    1  failed at run time (a check failed, a service could not be reached, an internal error)
    2  bad input: usage, configuration, or a request refused as invalid (the message names the field)
    3  not permitted (the role does not allow it)
    4  busy: try again later (the message says when)

Operations go through the command table with the console's caller (`Caller.local`), exactly as
REST and the WebSocket channel do, so the CLI gives the same answers and the same errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.table import default_table
from appliance.ipc.peers import Peers

T = TypeVar("T")
Handler = Callable[[ApplianceConfig, argparse.Namespace], int]
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_BUSY = 1, 2, 3, 4
EXIT_CODES = {"bad_request": EXIT_BAD_INPUT, "not_found": EXIT_BAD_INPUT, "too_large": EXIT_BAD_INPUT,
              "conflict": EXIT_BAD_INPUT, "unauthorized": EXIT_REFUSED, "forbidden": EXIT_REFUSED,
              "busy": EXIT_BUSY, "rate_limited": EXIT_BUSY}


class CliError(Exception):
    """Printed as one line ``appliance: <message>``; the process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, error: CommandError) -> CliError:
        return cls(error.message, EXIT_CODES.get(error.code, EXIT_FAILED))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    raise CliError(message, code)


def print_json(value: BaseModel | dict[str, Any]) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def log() -> logging.Logger:
    return logging.getLogger("appliance.cli")


async def with_dispatcher(config: ApplianceConfig, work: Callable[[Dispatcher], Awaitable[T]]) -> T:
    peers = Peers(config)
    try:
        return await work(Dispatcher(default_table(), peers, config, log()))
    finally:
        await peers.close()


def run_command(config: ApplianceConfig, name: str, payload: dict[str, Any]) -> BaseModel:
    """One command through the table, as the person at the console."""
    try:
        return asyncio.run(with_dispatcher(config, lambda d: d.call(name, payload, Caller.local())))
    except CommandError as exc:
        raise CliError.of(exc) from None


def stream_command(config: ApplianceConfig, name: str, payload: dict[str, Any],
                   each: Callable[[BaseModel], None]) -> None:
    """A streaming command, each item handed to ``each`` as it arrives."""

    async def work(dispatcher: Dispatcher) -> None:
        items: AsyncIterator[BaseModel] = dispatcher.stream(name, payload, Caller.local())
        async with contextlib.aclosing(items) as stream:  # type: ignore[type-var]
            async for item in stream:
                each(item)

    try:
        asyncio.run(with_dispatcher(config, work))
    except CommandError as exc:
        raise CliError.of(exc) from None


def actions(commands: Any, name: str, help_text: str) -> Any:
    """A command group's parser and its sub-parsers, one per action."""
    group = commands.add_parser(name, help=help_text)
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")



def json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"seconds\": 5}'")
    return parsed


def simple_action(group: Any, action: str, help_text: str, command: str,
                  *arguments: tuple[str, dict[str, Any]]) -> None:
    """An action whose arguments are the command's fields (by their dest), its reply printed as JSON."""
    parser = group.add_parser(action, help=help_text)
    fields = [parser.add_argument(*flags.split(), **options).dest for flags, options in arguments]
    parser.set_defaults(handler=lambda config, args: _print_reply(config, command, args, fields))


def _print_reply(config: ApplianceConfig, command: str, args: argparse.Namespace, fields: list[str]) -> int:
    values = vars(args)
    given = {name: values[name] for name in fields if values.get(name) is not None}  # absent: argparse.SUPPRESS
    print_json(run_command(config, command, given))
    return 0
