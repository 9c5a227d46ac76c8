"""The one dispatcher behind every surface: validate, authorize, call, audit, map errors.

    reply = await dispatcher.call("memory.search", {"q": "dock door"}, caller)
    async for item in dispatcher.stream("chat", {"message": "hi"}, caller): ...

Every failure leaves here as a `CommandError` (errors.py), so no surface maps errors itself.
Mutating commands are recorded in the store's audit log with who asked, through which surface,
from where, and whether it worked; the record never holds secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

from appliance.config import ApplianceConfig
from appliance.control.accounts import Accounts
from appliance.control.caller import Caller, role_allows
from appliance.control.command import Command, CommandTable, Context, Handler
from appliance.control.errors import CommandError
from appliance.control.memory_client import MemoryClient
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import Message
from appliance.protocol.store import STORE_AUDIT_APPEND, AuditIn

Payload = Mapping[str, Any] | Message


def _whole_numbers_as_ints(value: Any) -> Any:
    """JSON Schema counts 87.0 as an integer; pydantic's strict mode does not. Whole floats become ints
    (a float field takes an int in strict mode too), so JSON input means what JSON Schema says."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_ints(v) for v in value]
    return value


class Dispatcher:
    def __init__(self, table: CommandTable, peers: Peers, config: ApplianceConfig, log: logging.Logger) -> None:
        self.table = table
        self.peers = peers
        self.config = config
        self.log = log
        self.memory = MemoryClient(peers.store, peers.engine, log)
        self.accounts = Accounts(config, peers, log)

    def command(self, name: str, caller: Caller) -> Command[Any, Any]:
        found = self.table.get(name)
        if found is None or caller.via not in found.surfaces:
            raise CommandError("not_found", f"no command {name[:80]!r}", field="command")
        return found

    def authorize(self, command: Command[Any, Any], caller: Caller) -> None:
        if role_allows(caller.role, command.permission):
            return
        if caller.role is None:
            raise CommandError("unauthorized", f"{command.name} needs a token with the "
                                               f"{command.permission.value} role or higher")
        raise CommandError("forbidden", f"{command.name} needs the {command.permission.value} role; "
                                        f"this token has {caller.role.value}")

    def parse(self, command: Command[Any, Any], payload: Payload, *, where: str = "", strict: bool = False) -> Message:
        """The request model. ``strict`` is for JSON input: a JSON ``false`` is not a number, nor ``0`` a
        boolean; query strings, forms and the CLI pass text that is meant to be converted."""
        try:
            if isinstance(payload, command.request):
                return cast(Message, payload)
            data = payload.model_dump() if isinstance(payload, Message) else payload
            if strict:
                strict_json = json.dumps(_whole_numbers_as_ints(data))
                return cast(Message, command.request.model_validate_json(strict_json, strict=True))
            return cast(Message, command.request.model_validate(data))
        except Exception as exc:
            raise CommandError.of(exc, where=where) from None

    def _context(self, caller: Caller) -> Context:
        return Context(caller, self.peers, self.config, self.log, self.memory, self.accounts)

    async def call(self, name: str, payload: Payload, caller: Caller, *, where: str = "",
                   strict: bool = False) -> Message:
        command = self.command(name, caller)
        self.authorize(command, caller)
        request = self.parse(command, payload, where=where, strict=strict)
        if command.streaming:
            raise CommandError("bad_request", f"{name} streams its reply; use a streaming surface", field="command")
        try:
            reply = cast(Message, await cast(Handler, command.handler)(self._context(caller), request))
        except Exception as exc:
            raise await self._failed(command, caller, request, exc) from None
        if command.mutating:
            await self._audit(command, caller, request, reply, None)
        return reply

    async def stream(self, name: str, payload: Payload, caller: Caller, *, where: str = "",
                     strict: bool = False) -> AsyncGenerator[Message, None]:
        """The items of a streaming command; leaving the loop early closes the handler at once."""
        command = self.command(name, caller)
        self.authorize(command, caller)
        request = self.parse(command, payload, where=where, strict=strict)
        if not command.streaming:
            yield await self.call(name, request, caller)
            return
        items = cast(AsyncIterator[Message], command.handler(self._context(caller), request))
        last: Message | None = None
        try:
            async with contextlib.aclosing(items) as stream:  # type: ignore[type-var]
                async for item in stream:
                    last = item
                    yield item
        except GeneratorExit:
            raise
        except Exception as exc:
            raise await self._failed(command, caller, request, exc) from None
        if command.mutating:
            await self._audit(command, caller, request, last, None)

    async def _failed(self, command: Command[Any, Any], caller: Caller, request: Message,
                      exc: Exception) -> CommandError:
        """The failure in the one vocabulary, logged, and audited when the command mutates."""
        error = CommandError.of(exc)
        if error.code == "internal":
            self.log.error("command %s failed", command.name, exc_info=exc, extra={"COMMAND": command.name})
        else:
            self.log.info("command %s: %s: %s", command.name, error.code, error.message,
                          extra={"COMMAND": command.name, "ERROR_CODE": error.code})
        if command.mutating:
            await self._audit(command, caller, request, None, error)
        return error

    async def _audit(self, command: Command[Any, Any], caller: Caller, request: Message, reply: Message | None,
                     error: CommandError | None) -> None:
        details: dict[str, Any] = {"via": caller.via, "ok": error is None}
        if error is not None:
            details["error"] = error.code
        details.update(command.audit(request, reply))
        # A command may name who the row is about (a login names the user it tried, not "anonymous").
        user_id = str(details.pop("user_id", caller.subject))
        entry = AuditIn(user_id=user_id[:128], action=command.name, ip_address=caller.ip, details=details)
        try:
            await self.peers.store.call(STORE_AUDIT_APPEND, entry)
        except IpcError as exc:
            # The change is made and cannot be undone; say loudly that its record is missing.
            self.log.error("audit record of %s by %s not written: %s", command.name, caller.subject, exc,
                           extra={"COMMAND": command.name, "AUDIT_MISSING": 1})

