"""The one dispatcher behind every surface: validate, authorize, call, audit, map errors.

    reply = await dispatcher.call("memory.search", {"q": "dock door"}, caller)
    async for item in dispatcher.stream("chat", {"message": "hi"}, caller): ...

A call, in order:

1. the command exists on the caller's surface (else not_found);
2. the caller's role reaches the command's permission (401 without a role, 403 with too small a one);
3. the payload validates against the request model (400 naming every field at fault);
4. the owner rule: a row named by the request is the caller's, or their role reaches the rule's
   ``others`` (403 naming the field);
5. provenance: a call made for a task that has read untrusted data, whose effect is actuate or
   external, runs only if a person approved that exact call (403 approval_required);
6. the handler runs; a list under an owner rule is shaped for the caller (others' rows reduced);
7. the audit row: every call that is not a read, and every call made for a task, reads included,
   succeeded or failed, with who asked, through which surface, from where, and never a secret.

Every failure leaves here as a `CommandError` (errors.py), so no surface maps errors itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

from appliance.config import ApplianceConfig
from appliance.control.accounts import Accounts
from appliance.control.caller import Caller, role_allows
from appliance.control.command import Command, CommandTable, Context, Effect, Handler, OwnRow, OwnRows
from appliance.control.errors import CommandError
from appliance.control.memory_client import MemoryClient
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.phrases import Phrase
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


LEAVING = frozenset({Effect.ACTUATE, Effect.EXTERNAL})


def call_fingerprint(name: str, request: Message | Mapping[str, Any]) -> str:
    """What a person approves: the command and its exact arguments (after validation and defaults)."""
    data = request.model_dump(mode="json") if isinstance(request, Message) else dict(request)
    text = json.dumps([name, data], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
            raise CommandError("not_found", Phrase("command.unknown", name=name[:80]), field="command")
        return found

    def authorize(self, command: Command[Any, Any], caller: Caller) -> None:
        if role_allows(caller.role, command.permission):
            return
        if caller.role is None:
            raise CommandError("unauthorized", Phrase("command.needs_token", command=command.name,
                                                      role=command.permission.value))
        raise CommandError("forbidden", Phrase("command.needs_role", command=command.name,
                                               role=command.permission.value, has=caller.role.value))

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
        return Context(caller, self.peers, self.config, self.log, self.memory, self.accounts, self.table)

    @staticmethod
    def _audited(command: Command[Any, Any], caller: Caller) -> bool:
        return command.mutating or caller.task is not None

    async def _admit(self, command: Command[Any, Any], request: Message, caller: Caller) -> None:
        """The owner rule and the provenance rule (steps 4 and 5); a refusal is audited like a failure."""
        try:
            rule = command.owner
            if isinstance(rule, OwnRow):
                owner = await rule.owner(self._context(caller), request)
                needed = rule.needed(caller, owner) if owner is not None else None
                if needed is not None and not role_allows(caller.role, needed):
                    ident = str(getattr(request, rule.key, ""))[:80]
                    mine = owner == caller.subject
                    raise CommandError("forbidden", Phrase(
                        "command.owner_yours" if mine else "command.owner_not_yours", command=command.name,
                        resource=rule.resource, id=ident, role=needed.value, why=f" ({rule.why})" if rule.why else ""),
                        field=rule.key)
            if caller.task is not None and caller.untrusted and command.effect in LEAVING \
                    and call_fingerprint(command.name, request) not in caller.approved:
                raise CommandError("approval_required", Phrase("command.approval_required", command=command.name,
                                                              effect=command.effect.value, task=caller.task),
                                   field="command")
        except Exception as exc:
            raise await self._failed(command, caller, request, exc) from None

    @staticmethod
    def _shaped(command: Command[Any, Any], caller: Caller, reply: Any) -> Any:
        rule = command.owner
        return rule.shape(caller, reply) if isinstance(rule, OwnRows) and rule.applies(caller) else reply

    async def call(self, name: str, payload: Payload, caller: Caller, *, where: str = "",
                   strict: bool = False) -> Message:
        command = self.command(name, caller)
        self.authorize(command, caller)
        request = self.parse(command, payload, where=where, strict=strict)
        if command.streaming:
            raise CommandError("bad_request", Phrase("command.streams", command=name), field="command")
        await self._admit(command, request, caller)
        try:
            reply = cast(Message, await cast(Handler, command.handler)(self._context(caller), request))
        except Exception as exc:
            raise await self._failed(command, caller, request, exc) from None
        if self._audited(command, caller):
            await self._audit(command, caller, request, reply, None)
        return cast(Message, self._shaped(command, caller, reply))

    async def stream(self, name: str, payload: Payload, caller: Caller, *, where: str = "",
                     strict: bool = False) -> AsyncGenerator[Message, None]:
        """The items of a streaming command; leaving the loop early closes the handler at once."""
        command = self.command(name, caller)
        self.authorize(command, caller)
        request = self.parse(command, payload, where=where, strict=strict)
        if not command.streaming:
            yield await self.call(name, request, caller)
            return
        await self._admit(command, request, caller)
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
        if self._audited(command, caller):
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
        if self._audited(command, caller):
            await self._audit(command, caller, request, None, error)
        return error

    async def _audit(self, command: Command[Any, Any], caller: Caller, request: Message, reply: Message | None,
                     error: CommandError | None) -> None:
        details: dict[str, Any] = {"via": caller.via, "ok": error is None}
        if error is not None:
            details["error"] = error.code
        if caller.task is not None:  # made for a task: which one, what it did, whether it was tainted
            details.update(task=caller.task, effect=command.effect.value, untrusted=caller.untrusted)
        said = command.audit(request, reply)
        if said is None and error is None:
            return  # the command says nothing happened (a periodic job that found nothing to do)
        details.update(said or {})
        # A command may name who the row is about (a login names the user it tried, not "anonymous").
        user_id = str(details.pop("user_id", caller.subject))
        entry = AuditIn(user_id=user_id[:128], action=command.name, ip_address=caller.ip, details=details)
        try:
            await self.peers.store.call(STORE_AUDIT_APPEND, entry)
        except IpcError as exc:
            # The change is made and cannot be undone; say loudly that its record is missing.
            self.log.error("audit record of %s by %s not written: %s", command.name, caller.subject, exc,
                           extra={"COMMAND": command.name, "AUDIT_MISSING": 1})

