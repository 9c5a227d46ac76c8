"""The declaration of a command, the table of them, and what a handler is given.

One `Command` is everything every surface needs to know about an operation: its name, request
and response models (which validate input, shape output and become the OpenAPI schemas and
tool argument schemas), the permission, whether it streams, whether it changes anything (then
it is audited), which surfaces may reach it, and its REST route when it has one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal

from appliance.config import ApplianceConfig
from appliance.control.accounts import Accounts
from appliance.control.caller import Caller, Permission, Surface
from appliance.control.memory_client import MemoryClient
from appliance.ipc.peers import Peers
from appliance.protocol.common import Message, Req, Resp

ALL_SURFACES: frozenset[Surface] = frozenset({"rest", "websocket", "mqtt", "agent", "cli"})
# Operations that touch the box's files or keys: only at the box's own console.
CONSOLE_ONLY: frozenset[Surface] = frozenset({"cli"})


@dataclass(frozen=True)
class Context:
    """What a handler may use: who asks, the services, the configuration, a logger, and the
    process's shared clients (memory orchestration, accounts and token keys)."""

    caller: Caller
    peers: Peers
    config: ApplianceConfig
    log: logging.Logger
    memory: MemoryClient
    accounts: Accounts


Handler = Callable[[Context, Any], Awaitable[Any]]
StreamHandler = Callable[[Context, Any], AsyncIterator[Any]]
AuditDetails = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True)
class HttpRoute:
    """Where REST serves a command: GET/DELETE read the query string, POST/PUT/PATCH a JSON body;
    ``{name}`` (or ``{name:regex}``) segments of the path fill the request field of that name."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    status: int = 200
    render: Literal["json", "prometheus"] = "json"
    max_body_bytes: int | None = None  # default api.max_body_bytes
    form: bool = False  # also take application/x-www-form-urlencoded (OAuth2 clients post forms)
    # A multipart upload: (field that gets the file's text, field that gets its file name).
    upload: tuple[str, str] | None = None


def _no_details(_request: Any, reply: Any) -> dict[str, Any]:
    ident = getattr(reply, "id", None)
    return {"id": ident} if isinstance(ident, int | str) else {}


@dataclass(frozen=True)
class Command(Generic[Req, Resp]):
    name: str
    summary: str
    request: type[Req]
    response: type[Resp]
    permission: Permission
    handler: Handler | StreamHandler
    streaming: bool = False
    mutating: bool = False  # changes state: audited with who, from where, and the outcome
    http: tuple[HttpRoute, ...] = ()
    surfaces: frozenset[Surface] = ALL_SURFACES
    # What the audit row records besides who/what/outcome: called with the request and the reply
    # (None when the command failed); never secrets or whole texts. A "user_id" key names whom
    # the row is about when that is not the caller (a login attempt names the user tried).
    audit: AuditDetails = field(default=_no_details)
    tags: tuple[str, ...] = ()


class CommandTable:
    """The commands of one process, by name; surfaces iterate it to build their routes."""

    def __init__(self, *groups: tuple[Command[Any, Any], ...]) -> None:
        self._commands: dict[str, Command[Any, Any]] = {}
        for group in groups:
            for command in group:
                self.add(command)

    def add(self, command: Command[Any, Any]) -> None:
        if command.name in self._commands:
            raise ValueError(f"command {command.name!r} is declared twice")
        routes = {(r.method, r.path) for c in self._commands.values() for r in c.http}
        for route in command.http:
            if (route.method, route.path) in routes:
                raise ValueError(f"{command.name}: {route.method} {route.path} already serves another command")
        self._commands[command.name] = command

    def get(self, name: str) -> Command[Any, Any] | None:
        return self._commands.get(name)

    def __iter__(self) -> Iterator[Command[Any, Any]]:
        return iter(self._commands.values())

    def __len__(self) -> int:
        return len(self._commands)


def command(name: str, summary: str, request: type[Req], response: type[Resp], permission: Permission,
            handler: Handler | StreamHandler, **options: Any) -> Command[Req, Resp]:
    """A Command, with the request/response types inferred for mypy."""
    return Command(name, summary, request, response, permission, handler, **options)


class Reply(Message):
    """A command's answer when it has nothing to return but that it is done."""

    ok: bool = True
    detail: str = ""
