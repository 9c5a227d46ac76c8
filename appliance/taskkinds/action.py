"""action: a built-in action, or one declared in agent.actions (a sandboxed program with an argument
schema, the roles that may run it, and whether each run waits for a person's approval).

Built-ins, declared here once: send_alert (notify.send, operator), heartbeat (the box's health,
viewer), archive (the archive run, operator). A declared action may not take a built-in's name
(checked when the agent starts: check_config). At creation the action must exist, the creator's
role must be one it allows, and its arguments must match its schema; the runner checks all of it
again, since a schedule's task is created long after the schedule was saved.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import Field, JsonValue

from appliance.config import ApplianceConfig, ConfigError
from appliance.control.caller import Permission, Role, role_allows
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.common import Message
from appliance.protocol.tasks import ACTION_NAME
from appliance.taskkinds.base import Creating, RunFailed, Running, TaskKind
from appliance.taskkinds.notify import alert


class ActionFields(Message):
    action: str = Field(pattern=ACTION_NAME, description="a built-in action or one declared in agent.actions")
    args: dict[str, JsonValue] = Field(default_factory=dict, description="its arguments (its args_schema)")


@dataclass(frozen=True)
class Builtin:
    summary: str
    least_role: Role
    run: Callable[[Running, ActionFields], Awaitable[JsonValue]]
    args_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "additionalProperties": False})


async def _send_alert(running: Running, fields: ActionFields) -> JsonValue:
    spec = running.task.spec
    text = str(fields.args.get("message") or "") or _describe(spec.input) or "alert"
    return await alert(running, text[:4000])


async def _heartbeat(running: Running, _fields: ActionFields) -> JsonValue:
    return (await running.call("system.health", {})).model_dump(mode="json")  # type: ignore[no-any-return]


async def _archive(running: Running, _fields: ActionFields) -> JsonValue:
    last: Any = None
    async with contextlib.aclosing(running.dispatcher.stream("memory.archive", {}, running.caller)) as items:
        async for item in items:
            last = item
    return last.model_dump(mode="json") if last is not None else None


BUILTINS: dict[str, Builtin] = {
    "send_alert": Builtin("Tell the site's staff (the failure it follows, or args.message).", Role.OPERATOR,
                          _send_alert, {"type": "object", "properties": {"message": {"type": "string",
                                                                                     "maxLength": 4000}},
                                        "additionalProperties": False}),
    "heartbeat": Builtin("The box's health, as a task.", Role.VIEWER, _heartbeat),
    "archive": Builtin("Move old memories into the archive now.", Role.OPERATOR, _archive),
}


def check_config(config: ApplianceConfig) -> None:
    """A declared action may not take a built-in's name (ConfigError naming the key)."""
    for name in config.agent.actions:
        if name in BUILTINS:
            raise ConfigError(f"agent.actions.{name}: {name!r} is a built-in action's name; choose another")


def action_names(config: ApplianceConfig) -> set[str]:
    return set(BUILTINS) | set(config.agent.actions)


def _refusal(role: Role, name: str, config: ApplianceConfig) -> Phrase | None:
    """Why ``role`` may not run action ``name`` (None: it may)."""
    builtin = BUILTINS.get(name)
    if builtin is not None:
        enough = role_allows(role, Permission(builtin.least_role.value))
        return None if enough else Phrase("action.needs_role", name=name, role=builtin.least_role.value)
    declared = config.agent.actions.get(name)
    assert declared is not None
    return None if role.value in declared.roles else \
        Phrase("action.role_not_allowed", role=role.value, name=name, allowed=", ".join(declared.roles))


def _args_problem(fields: ActionFields, config: ApplianceConfig) -> tuple[str, str] | None:
    builtin = BUILTINS.get(fields.action)
    schema = builtin.args_schema if builtin else config.agent.actions[fields.action].args_schema
    try:
        jsonschema.validate(fields.args, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path)
        return (f"args.{where}" if where else "args"), exc.message[:300]
    return None


def check(creating: Creating, fields: ActionFields) -> None:
    config = creating.config
    if fields.action not in action_names(config):
        raise CommandError("bad_request", Phrase("action.unknown", name=fields.action, builtins=", ".join(BUILTINS)),
                           field="action")
    if why := _refusal(creating.role, fields.action, config):
        raise CommandError("forbidden", why, field="action")
    if problem := _args_problem(fields, config):
        raise CommandError("bad_request", Phrase("field.problem", field=problem[0], problem=problem[1]),
                           field=problem[0])


def needs_approval(config: ApplianceConfig, fields: ActionFields) -> bool:
    declared = config.agent.actions.get(fields.action)
    return declared is not None and declared.approval


async def run(running: Running, fields: ActionFields) -> JsonValue:
    config, role = running.config, Role(running.task.role)
    if fields.action not in action_names(config):
        raise RunFailed(Phrase("action.not_declared", name=fields.action))
    if why := _refusal(role, fields.action, config):
        raise RunFailed(why)
    if problem := _args_problem(fields, config):
        raise RunFailed(Phrase("field.problem", field=problem[0], problem=problem[1]))
    builtin = BUILTINS.get(fields.action)
    if builtin is not None:
        return await builtin.run(running, fields)
    declared = config.agent.actions[fields.action]
    argv = [fill(part, fields.args) for part in declared.command]
    ran = await running.sandbox(argv, limits=declared.limits, network=declared.network, env=declared.env,
                                readable=list(declared.readable), writable=list(declared.writable))
    if not ran.ok:
        raise RunFailed(ran.summary, ran.result)
    return ran.result


def fill(part: str, args: dict[str, JsonValue]) -> str:
    """``{name}`` as a whole argv element becomes that argument, as one element: no shell ever sees it."""
    if re.fullmatch(r"\{[a-z_][a-z0-9_]{0,63}\}", part):
        value = args.get(part[1:-1])
        if value is None:
            raise RunFailed(Phrase("action.arg_required", name=part[1:-1]))
        return value if isinstance(value, str) else str(value)
    return part


def _describe(given: JsonValue) -> str:
    if isinstance(given, dict) and given.get("error"):
        return f"{given.get('schedule', 'a task')} {given.get('state', 'failed')}: {given['error']}"
    return ""


KIND = TaskKind("action", "A built-in action or one declared in agent.actions (sandboxed), with its arguments.",
                ActionFields, Role.VIEWER, run, check=check)
