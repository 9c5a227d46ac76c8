"""capabilities: what this caller may do, from the declarations themselves, never from a copied list.

One answer per caller (role and surface): the commands they may call, each with its effect, its
tool face and what its owner rule lets them do; the topics they may subscribe to; the task kinds
and actions they may start; and the box's vocabularies (roles, effects, task states and kinds,
error codes, quarantine reasons, memory kinds). The admin page builds its controls from it, the
agent its tool list, docs/api.md is generated from an admin's (scripts/api_doc.py).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import Field

from appliance.control.caller import Caller, Permission, Role, role_allows
from appliance.control.command import Command, Context, Effect, HttpRoute, OwnRow, OwnRows, command
from appliance.control.errors import ErrorCode
from appliance.control.notify import TRANSPORTS
from appliance.control.toolface import tool_parameters
from appliance.control.topics import TOPICS
from appliance.protocol.common import Empty, Message
from appliance.protocol.devices import QuarantineKind
from appliance.protocol.store import MemoryKind
from appliance.protocol.tasks import FINAL, TaskState
from appliance.taskkinds import KINDS
from appliance.taskkinds.action import BUILTINS


class ToolFace(Message):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments (the request fields it fills)")


class OwnerFace(Message):
    resource: str = Field(description="what its rows are: task, schedule, token, conversation, document")
    own: bool = Field(description="this caller may use it on their own rows")
    others: bool = Field(description="this caller may use it on other people's rows (else 403, or reduced rows)")


class CommandFace(Message):
    name: str
    summary: str
    effect: Effect
    streaming: bool
    permission: Permission = Field(description="the least role it needs")
    http: list[str] = Field(description="its REST routes, 'METHOD /path'")
    tool: ToolFace | None
    owner: OwnerFace | None = Field(description="its owner rule, as it applies to this caller; null: none")


class KindFace(Message):
    name: str
    summary: str
    fields: dict[str, Any] = Field(description="JSON schema of the kind's own fields")
    least_role: Role
    resumable: bool = Field(description="a run cut short by a restart is run again")


class ActionFace(Message):
    name: str
    summary: str
    builtin: bool
    args_schema: dict[str, Any]
    approval: bool = Field(description="each run waits until another person approves it")


class Vocabularies(Message):
    roles: list[str]
    effects: list[str]
    task_states: list[str]
    final_task_states: list[str]
    task_kinds: list[str] = Field(description="every kind the box knows (task_kinds above: those you may start)")
    error_codes: list[str]
    quarantine_reasons: list[str]
    memory_kinds: list[str]
    notify_transports: list[str]


class Capabilities(Message):
    user: str
    role: Role | None
    surface: str
    commands: list[CommandFace]
    topics: list[str]
    task_kinds: list[KindFace]
    actions: list[ActionFace]
    vocabularies: Vocabularies


def may_call(command: Command[Any, Any], caller: Caller) -> bool:
    """Whether ``caller`` reaches ``command`` at all (surface and role; an owner rule may still refuse a row)."""
    if caller.via not in command.surfaces or not role_allows(caller.role, command.permission):
        return False
    rule = command.owner
    return not isinstance(rule, OwnRow) or role_allows(caller.role, rule.own) or role_allows(caller.role, rule.others)


def _owner(command: Command[Any, Any], caller: Caller) -> OwnerFace | None:
    rule = command.owner
    if isinstance(rule, OwnRow):
        return OwnerFace(resource=rule.resource, own=role_allows(caller.role, rule.own),
                         others=role_allows(caller.role, rule.others))
    if isinstance(rule, OwnRows):
        return OwnerFace(resource=rule.resource, own=True, others=not rule.applies(caller))
    return None


def _route(route: HttpRoute) -> str:
    return f"{route.method} {route.path}"


def command_face(command: Command[Any, Any], caller: Caller) -> CommandFace:
    tool = None
    if command.tool is not None:
        tool = ToolFace(name=command.tool.name, description=command.tool.description,
                        parameters=tool_parameters(command))
    return CommandFace(name=command.name, summary=command.summary, effect=command.effect, streaming=command.streaming,
                       permission=command.permission, http=[_route(r) for r in command.http], tool=tool,
                       owner=_owner(command, caller))


def kinds_for(role: Role | None) -> list[KindFace]:
    if role is None:
        return []
    return [KindFace(name=kind.name, summary=kind.summary, fields=kind.fields.model_json_schema(),
                     least_role=kind.least_role, resumable=kind.resumable)
            for kind in KINDS.values() if role_allows(role, Permission(kind.least_role.value))]


def actions_for(ctx: Context, role: Role | None) -> list[ActionFace]:
    if role is None:
        return []
    found = [ActionFace(name=name, summary=builtin.summary, builtin=True, args_schema=builtin.args_schema,
                        approval=False)
             for name, builtin in BUILTINS.items() if role_allows(role, Permission(builtin.least_role.value))]
    found += [ActionFace(name=name, summary=declared.description, builtin=False, args_schema=declared.args_schema,
                         approval=declared.approval)
              for name, declared in sorted(ctx.config.agent.actions.items())
              if role.value in declared.roles and name not in BUILTINS]
    return found


def vocabularies() -> Vocabularies:
    return Vocabularies(
        roles=[role.value for role in Role], effects=[effect.value for effect in Effect],
        task_states=[state.value for state in TaskState], final_task_states=sorted(state.value for state in FINAL),
        task_kinds=sorted(KINDS), error_codes=list(typing.get_args(ErrorCode)),
        quarantine_reasons=list(typing.get_args(QuarantineKind)), memory_kinds=list(typing.get_args(MemoryKind)),
        notify_transports=list(TRANSPORTS))


async def capabilities(ctx: Context, _: Empty) -> Capabilities:
    caller = ctx.caller
    faces = [command_face(c, caller) for c in sorted(ctx.table, key=lambda c: c.name) if may_call(c, caller)]
    allowed = {face.name for face in faces}
    starts = "tasks.create" in allowed
    return Capabilities(
        user=caller.subject, role=caller.role, surface=caller.via, commands=faces,
        # /control takes signed-in callers only: no topic for anyone else.
        topics=[name for name, topic in TOPICS.items() if topic.command in allowed and caller.role is not None],
        task_kinds=kinds_for(caller.role) if starts else [], actions=actions_for(ctx, caller.role) if starts else [],
        vocabularies=vocabularies())


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("capabilities", "What you may do here: commands with their effects and tool faces, topics, task kinds, "
            "actions, and the box's vocabularies.", Empty, Capabilities, Permission.PUBLIC, capabilities,
            effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/capabilities"),), tags=("system",)),
)
