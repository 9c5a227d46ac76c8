"""The declaration of a command, the table of them, and what a handler is given.

One `Command` is everything every surface needs to know about an operation: its name, request
and response models (which validate input, shape output and become the OpenAPI schemas), the
permission, whether it streams, which surfaces may reach it, its REST route when it has one,
and the three facts that make it a capability:

- its **effect** (`Effect`): read, write the box's own data, actuate a device or the world, or
  send something off the box. Everything but a read is audited; the effect is what the agent's
  defences and the approval rules are written against.
- its **owner rule** (`OwnRow` or `OwnRows`, or none): whose rows a caller may read or change. The
  dispatcher checks it on every surface; no adapter does.
- its **tool face** (`Tool`, or none): the name, one-line description and the few request fields
  under which a model may call it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal

from appliance.config import ApplianceConfig
from appliance.control.accounts import Accounts
from appliance.control.caller import Caller, Permission, Surface, role_allows
from appliance.control.memory_client import MemoryClient
from appliance.ipc.peers import Peers
from appliance.protocol.common import Message, Req, Resp

ALL_SURFACES: frozenset[Surface] = frozenset({"rest", "websocket", "mqtt", "agent", "cli"})
# Operations that touch the box's files or keys: only at the box's own console.
CONSOLE_ONLY: frozenset[Surface] = frozenset({"cli"})


class Effect(StrEnum):
    """What a command does to the world, from least to most consequential."""

    READ = "read"  # reads the box's data; changes nothing
    WRITE = "write"  # changes the box's own data: memory, tasks, schedules, accounts, settings
    ACTUATE = "actuate"  # acts on a device or the site: a device command, a message on the site's broker
    EXTERNAL = "external"  # something leaves the box: the uplink, a webhook, people's phones


@dataclass(frozen=True)
class Tool:
    """How a model may call a command: a tool name, one line saying what it does, and the request
    fields it fills (the others keep their defaults). The argument schema is derived from the request
    model (control/toolface.py), so a tool can never accept what the command would refuse."""

    name: str
    description: str
    fields: tuple[str, ...] = ()


Owner = Callable[["Context", Any], Awaitable[str | None]]


@dataclass(frozen=True)
class OwnRow:
    """The request names one row that belongs to someone: ``owner`` finds whose it is (a subject;
    "" for the box's own rows, None when there is no such row and the handler will say so). The
    caller's role must reach ``own`` for their own rows and ``others`` for anyone else's."""

    resource: str  # what a row is, for messages: "task", "schedule", "token", "conversation"
    key: str  # the request field that names the row: the refusal's field
    owner: Owner
    own: Permission
    others: Permission
    why: str = ""  # said after a refusal, when the rule has a reason worth saying

    def needed(self, caller: Caller, owner: str) -> Permission:
        return self.own if owner and owner == caller.subject else self.others


@dataclass(frozen=True)
class OwnRows:
    """The reply lists rows of many owners: a caller whose role reaches ``others`` sees every row
    whole; anyone else gets ``shape(caller, reply)``, which keeps their own rows and hides or
    reduces the rest."""

    resource: str
    others: Permission
    shape: Callable[[Caller, Any], Any]

    def applies(self, caller: Caller) -> bool:
        return not role_allows(caller.role, self.others)


OwnerRule = OwnRow | OwnRows


@dataclass(frozen=True)
class Context:
    """What a handler may use: who asks, the services, the configuration, a logger, the process's
    shared clients (memory orchestration, accounts and token keys), and the command table itself."""

    caller: Caller
    peers: Peers
    config: ApplianceConfig
    log: logging.Logger
    memory: MemoryClient
    accounts: Accounts
    table: CommandTable


Handler = Callable[[Context, Any], Awaitable[Any]]
StreamHandler = Callable[[Context, Any], AsyncIterator[Any]]
AuditDetails = Callable[[Any, Any], dict[str, Any] | None]


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
    # A large file as the raw body: streamed to the api's upload folder (after the role check, never
    # into memory); this request field gets its path. The query string gives the other fields.
    body_file: str | None = None


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
    effect: Effect
    streaming: bool = False
    http: tuple[HttpRoute, ...] = ()
    surfaces: frozenset[Surface] = ALL_SURFACES
    # What the audit row records besides who/what/outcome: called with the request and the reply
    # (None when the command failed); never secrets or whole texts. A "user_id" key names whom
    # the row is about when that is not the caller (a login attempt names the user tried). None
    # after a success: nothing happened, so no row.
    audit: AuditDetails = field(default=_no_details)
    tags: tuple[str, ...] = ()
    owner: OwnerRule | None = None
    tool: Tool | None = None

    @property
    def mutating(self) -> bool:
        """Changes something (then every call is audited, whoever makes it)."""
        return self.effect is not Effect.READ


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
        if command.tool is not None:
            for other in self._commands.values():
                if other.tool is not None and other.tool.name == command.tool.name:
                    raise ValueError(f"{command.name}: tool {command.tool.name!r} is {other.name}'s already")
            unknown = set(command.tool.fields) - set(command.request.model_fields)
            if unknown:
                raise ValueError(f"{command.name}: tool fields {sorted(unknown)} are not request fields")
        self._commands[command.name] = command

    def get(self, name: str) -> Command[Any, Any] | None:
        return self._commands.get(name)

    def __iter__(self) -> Iterator[Command[Any, Any]]:
        return iter(self._commands.values())

    def __len__(self) -> int:
        return len(self._commands)


def command(name: str, summary: str, request: type[Req], response: type[Resp], permission: Permission,
            handler: Handler | StreamHandler, *, effect: Effect, **options: Any) -> Command[Req, Resp]:
    """A Command, with the request/response types inferred for mypy; its effect is always declared."""
    return Command(name, summary, request, response, permission, handler, effect, **options)


class Reply(Message):
    """A command's answer when it has nothing to return but that it is done."""

    ok: bool = True
    detail: str = ""
