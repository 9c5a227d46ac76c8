"""What a task kind is: one declaration read by validation, the runner, the CLI, /control and the page.

A kind declares its own fields (a pydantic model: what a task of this kind is given), the least
role that may start one, whether a run cut short by a restart is run again (only kinds that read
and then write their result atomically), what is checked at creation beyond the model (paths,
actions, roles: everything that can be known before any work), and how it runs. A kind's runner
reaches the rest of the box only through the command table, as the task's creator acting for
the task (``Running.caller``), so a task can do no more than its creator could by hand and each
of its calls is audited; sandboxed programs go through ``Running.sandbox``, which the agent
provides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import JsonValue, ValidationError

from appliance.config import ApplianceConfig, SandboxLimits
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.common import Message
from appliance.protocol.tasks import TaskRow

# A step of the task's log; data {"percent": N, ...} also moves the task's progress (agent/runner.py).
Step = Callable[[str | Phrase, JsonValue], Awaitable[None]]


class WaitsForApproval(Exception):
    """The task can go on only once a person approves what its last step asked for (the step says
    what): the runner parks it in waiting_approval; tasks.approve queues it again, approved."""


class RunFailed(Exception):
    """The task failed for a reason its creator should read; ``result`` is kept with it."""

    def __init__(self, message: str | Phrase, result: JsonValue = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Ran:
    """How a sandboxed program ended: the step-log record, whether it succeeded, one line saying how."""

    result: dict[str, JsonValue]
    ok: bool
    summary: str


class Sandbox(Protocol):
    async def __call__(self, argv: list[str], *, limits: SandboxLimits, network: bool = False,
                       env: dict[str, str] | None = None, readable: list[Path] | None = None,
                       writable: list[Path] | None = None) -> Ran: ...


@dataclass(frozen=True)
class Creating:
    """What a kind's creation check is given: who creates the task, with what role, on which box."""

    role: Role
    subject: str
    config: ApplianceConfig


@dataclass(frozen=True)
class Running:
    """What a kind's runner is given."""

    task: TaskRow
    caller: Caller  # the task's creator, acting for this task (Caller.for_task)
    dispatcher: Dispatcher
    config: ApplianceConfig
    step: Step
    sandbox: Sandbox
    log: logging.Logger
    history: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None  # the task's step log so far

    async def call(self, name: str, payload: dict[str, Any]) -> Any:
        return await self.dispatcher.call(name, payload, self.caller)


F = TypeVar("F", bound=Message)


@dataclass(frozen=True)
class TaskKind(Generic[F]):
    name: str
    summary: str
    fields: type[F]
    least_role: Role
    run: Callable[[Running, F], Awaitable[JsonValue]]
    check: Callable[[Creating, F], None] | None = None
    resumable: bool = False  # reads, then writes its result atomically: a run cut short is run again
    model_work: bool = False  # takes one of resource.max_concurrency model slots rather than a task slot

    def parse(self, given: dict[str, Any]) -> F:
        """The kind's fields from a task's spec, or a CommandError naming each field at fault."""
        unknown = sorted(set(given) - set(self.fields.model_fields))
        if unknown:
            fields = ", ".join(self.fields.model_fields) or "none"
            article = "an" if self.name[0] in "aeiou" else "a"  # English only: the catalogue's words need none
            raise CommandError("bad_request", Phrase("task.unknown_field", field=unknown[0], kind=self.name,
                                                      fields=fields).worded(
                f"{unknown[0]}: not a field of {article} {self.name} task (its fields: {fields})"), field=unknown[0])
        try:
            return self.fields.model_validate(given)
        except ValidationError as exc:
            raise CommandError.of(exc) from None

    def stored(self, spec: dict[str, Any]) -> F:
        """The kind's fields from a stored spec. Specs stored before kinds were declared one by one
        carry every kind's fields, unset ones as null: only this kind's are read."""
        return self.parse({name: value for name, value in spec.items()
                           if name in self.fields.model_fields and value is not None})
