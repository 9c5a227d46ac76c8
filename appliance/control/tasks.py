"""Task commands: create (the reference form included), get with the step log, list, cancel, retry,
approve and reject.

What a task of each kind is given, who may start it and what is checked before any work is the
kind's declaration (appliance/taskkinds/): an unknown kind, a field another kind has, a path
outside the allowed folders, an unknown action, arguments against the action's schema are
refused here (400 naming the field) and no task row is written. The task runs with its creator's
role (appliance/agent/runner.py).

Owner rules (the dispatcher checks them; docs/architecture.md "Owner rules"): everyone signed in
sees every task's state in tasks.list, but a task's spec, step log, result and error are its
creator's and operators': a viewer gets others' rows reduced to kind and state, and 403 from
tasks.get (REST, /control frames, resume, the page alike). Cancelling and retrying: one's own
tasks, or an operator anyone's. Approving and rejecting: an operator, not on one's own task
(an admin may). Approval itself: a declared action with ``approval: true`` waits in
waiting_approval until someone who may run that action decides (back to the queue, or cancelled).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, create_model

from appliance.control.caller import Caller, Permission, Role, role_allows
from appliance.control.command import Command, Context, Effect, HttpRoute, OwnRow, OwnRows, Tool, command
from appliance.control.errors import CommandError
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Message
from appliance.protocol.tasks import (
    AGENT_CANCEL,
    AGENT_WAKE,
    KIND_NAME,
    STORE_TASK_CREATE,
    STORE_TASK_GET,
    STORE_TASK_STEP,
    STORE_TASK_UPDATE,
    STORE_TASKS,
    StepIn,
    TaskDetail,
    TaskDetailQuery,
    TaskId,
    TaskNew,
    TaskPage,
    TaskQuery,
    TaskRow,
    TaskSpec,
    TaskState,
    TaskUpdate,
)
from appliance.taskkinds import KINDS
from appliance.taskkinds.base import Creating, TaskKind

COMMON = ("kind", "command", "max_attempts", "timeout_s")


def _kind_fields() -> dict[str, Any]:
    """Every kind's own fields, each optional here (which ones a kind takes, and which it needs, its
    declaration checks: new_spec); a name two kinds declare differently is a mistake in them."""
    merged: dict[str, tuple[Any, Any]] = {}
    shapes: dict[str, tuple[Any, str]] = {}
    for kind in KINDS.values():
        for name, info in kind.fields.model_fields.items():
            if name in COMMON:
                raise ValueError(f"task kind {kind.name}: field {name!r} is one every task has")
            shape = (info.annotation, repr(info.metadata))
            if shapes.setdefault(name, shape) != shape:
                raise ValueError(f"task kind {kind.name}: field {name!r} differs from another kind's")
            if name not in merged:
                constrained = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
                merged[name] = (constrained | None, Field(None, description=info.description))
    return merged


class _TaskCreateBase(Message):
    """A task. ``kind`` or, as the reference design writes it, ``command`` (``{"command": "search",
    "query": ..., "output_path": ...}``), and the kind's own fields."""

    kind: str | None = Field(None, pattern=KIND_NAME, description="what the task does (see the capabilities)")
    command: str | None = Field(None, pattern=KIND_NAME, description="the reference form's name for kind")
    max_attempts: int = Field(1, ge=1, le=20)
    timeout_s: float = Field(300.0, gt=0, le=86_400)

    @property
    def kind_name(self) -> str:
        """The kind asked for; CommandError naming the field when none or two different ones are given."""
        if self.kind is None and self.command is None:
            raise CommandError("bad_request", Phrase("task.kind_required", kinds=", ".join(sorted(KINDS))),
                               field="kind")
        if self.kind is not None and self.command is not None and self.kind != self.command:
            raise CommandError("bad_request", Phrase("task.kind_and_command"), field="command")
        return str(self.kind or self.command)

    def kind_values(self) -> dict[str, Any]:
        """The fields given for the kind (those left unset are the kind's defaults)."""
        return {name: getattr(self, name) for name in self.model_fields_set if name not in COMMON}


TaskCreate = create_model("TaskCreate", __base__=_TaskCreateBase, __doc__=_TaskCreateBase.__doc__,
                          **_kind_fields())


def new_spec(ctx: Context, request: _TaskCreateBase, role: Role) -> TaskSpec:
    """The spec of a task ``role`` may create, checked as far as it can be before it runs; else a
    CommandError naming the field (an unknown kind or field 400, a role too small 403)."""
    kind = _kind(request.kind_name, "kind" if request.kind else "command", role)
    fields = kind.parse(request.kind_values())
    if kind.check is not None:
        kind.check(Creating(role, ctx.caller.subject, ctx.config), fields)
    return TaskSpec(kind=kind.name, timeout_s=request.timeout_s, **fields.model_dump(mode="json"))


def check_spec(ctx: Context, spec: TaskSpec, role: Role) -> None:
    """A stored spec (a retry, a task waiting for approval, a schedule's action) checked for ``role``."""
    kind = _kind(spec.kind, "kind", role)
    fields = kind.stored(spec.fields())
    if kind.check is not None:
        kind.check(Creating(role, ctx.caller.subject, ctx.config), fields)


def _kind(name: str, field: str, role: Role) -> TaskKind[Any]:
    kind = KINDS.get(name)
    if kind is None:
        raise CommandError("bad_request", Phrase("task.no_kind", field=field, name=name,
                                                kinds=", ".join(sorted(KINDS))), field=field)
    if not role_allows(role, Permission(kind.least_role.value)):
        raise CommandError("forbidden", Phrase("task.kind_needs_role", kind=kind.name, role=kind.least_role.value),
                           field=field)
    return kind


async def create(ctx: Context, request: _TaskCreateBase) -> TaskRow:
    assert ctx.caller.role is not None
    spec = new_spec(ctx, request, ctx.caller.role)
    task = await ctx.peers.store.call(STORE_TASK_CREATE, TaskNew(
        spec=spec, created_by=ctx.caller.subject[:128], role=ctx.caller.role.value, max_attempts=request.max_attempts))
    await _wake(ctx)
    return task


async def _wake(ctx: Context) -> None:
    """Tell the agent at once; if it is away it finds the task when it polls or starts."""
    try:
        await ctx.peers.agent.call(AGENT_WAKE, Empty(), timeout_s=2.0)
    except IpcError as exc:
        ctx.log.debug("the agent was not told of a new task (%s); it will find it", exc)


async def get(ctx: Context, query: TaskDetailQuery) -> TaskDetail:
    return await ctx.peers.store.call(STORE_TASK_GET, query)


async def list_tasks(ctx: Context, query: TaskQuery) -> TaskPage:
    return await ctx.peers.store.call(STORE_TASKS, query)


async def cancel(ctx: Context, request: TaskId) -> TaskRow:
    store = ctx.peers.store
    task = (await store.call(STORE_TASK_GET, TaskDetailQuery(id=request.id, steps=0))).task
    if task.state is TaskState.RUNNING:
        stopped = await ctx.peers.agent.call(AGENT_CANCEL, request, timeout_s=15.0)  # it waits up to 10 s for the end
        if stopped.changed:
            return (await store.call(STORE_TASK_GET, TaskDetailQuery(id=request.id, steps=0))).task
    return await store.call(STORE_TASK_UPDATE, TaskUpdate(
        id=request.id, state=TaskState.CANCELLED, error=f"cancelled by {ctx.caller.subject}"[:4000],
        expect=[TaskState.QUEUED, TaskState.WAITING_APPROVAL]))


async def retry(ctx: Context, request: TaskId) -> TaskRow:
    """A new task with the same spec (the finished one stays as it ended)."""
    old = (await ctx.peers.store.call(STORE_TASK_GET, TaskDetailQuery(id=request.id, steps=0))).task
    if old.state not in (TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT):
        raise CommandError("conflict", Phrase("task.not_retryable", id=old.id, state=old.state.value))
    assert ctx.caller.role is not None
    check_spec(ctx, old.spec, ctx.caller.role)
    task = await ctx.peers.store.call(STORE_TASK_CREATE, TaskNew(
        spec=old.spec, created_by=ctx.caller.subject[:128], role=ctx.caller.role.value, schedule=old.schedule,
        max_attempts=old.max_attempts))
    await _wake(ctx)
    return task


class TaskDecision(TaskId):
    reason: str = Field("", max_length=500, description="why (kept in the task's step log; a rejection's error)")


async def _decidable(ctx: Context, request: TaskDecision) -> TaskRow:
    task = (await ctx.peers.store.call(STORE_TASK_GET, TaskDetailQuery(id=request.id, steps=0))).task
    if task.state is not TaskState.WAITING_APPROVAL:
        raise CommandError("conflict", Phrase("task.not_awaiting_approval", id=task.id, state=task.state.value))
    assert ctx.caller.role is not None
    check_spec(ctx, task.spec, ctx.caller.role)  # the decider may run it themselves
    return task


async def approve(ctx: Context, request: TaskDecision) -> TaskRow:
    await _decidable(ctx, request)
    by = ctx.caller.subject[:128]
    if request.reason:
        await ctx.peers.store.call(STORE_TASK_STEP, StepIn.saying(request.id, Phrase("task.approved_because",
                                                                                    reason=request.reason)))
    task = await ctx.peers.store.call(STORE_TASK_UPDATE, TaskUpdate(
        id=request.id, state=TaskState.QUEUED, expect=[TaskState.WAITING_APPROVAL], approved_by=by))
    await _wake(ctx)
    return task


async def reject(ctx: Context, request: TaskDecision) -> TaskRow:
    await _decidable(ctx, request)
    why = f"rejected by {ctx.caller.subject}" + (f": {request.reason}" if request.reason else "")
    return await ctx.peers.store.call(STORE_TASK_UPDATE, TaskUpdate(
        id=request.id, state=TaskState.CANCELLED, error=why[:4000], expect=[TaskState.WAITING_APPROVAL]))


async def task_owner(ctx: Context, request: TaskId) -> str | None:
    try:
        return (await ctx.peers.store.call(STORE_TASK_GET, TaskDetailQuery(id=request.id, steps=0))).task.created_by
    except IpcError as exc:
        if exc.code == "not_found":
            return None  # the handler says so
        raise


def _state_only(row: TaskRow) -> TaskRow:
    """What anyone may see of someone else's task: what kind it is, and how it is doing."""
    return row.model_copy(update={"spec": TaskSpec(kind=row.spec.kind, timeout_s=row.spec.timeout_s,
                                                   priority=row.spec.priority),
                                  "result": None, "error": ""})


def _others_reduced(caller: Caller, page: TaskPage) -> TaskPage:
    return page.model_copy(update={"items": [row if row.created_by == caller.subject else _state_only(row)
                                             for row in page.items]})


def _task_audit(request: Any, reply: TaskRow | None) -> dict[str, Any]:
    return {"task": reply.id if reply else getattr(request, "id", None),
            "kind": reply.spec.kind if reply else getattr(request, "kind", None)}


def _own(own: Permission, others: Permission, why: str = "") -> OwnRow:
    return OwnRow("task", "id", task_owner, own=own, others=others, why=why)


DECIDE = _own(Permission.ADMIN, Permission.OPERATOR, "someone else must decide on a task they created, or an admin")


ONE = "/api/v1/tasks/{id}"
COMMANDS: tuple[Command[Any, Any], ...] = (
    command("tasks.create", "Queue a task of any kind the capabilities list (the reference form too).", TaskCreate,
            TaskRow, Permission.VIEWER, create, effect=Effect.WRITE, http=(HttpRoute("POST", "/api/v1/tasks", 201),),
            audit=_task_audit, tags=("tasks",)),
    command("tasks.get", "One task with its step log (after_seq: only newer steps, to resume).", TaskDetailQuery,
            TaskDetail, Permission.VIEWER, get, effect=Effect.READ, http=(HttpRoute("GET", ONE),), tags=("tasks",),
            owner=_own(Permission.VIEWER, Permission.OPERATOR),
            tool=Tool("get_task", "A task's state, result and step log by its id.", ("id",))),
    command("tasks.list", "Tasks, newest first, by state, schedule or kind.", TaskQuery, TaskPage, Permission.VIEWER,
            list_tasks, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/tasks"),), tags=("tasks",),
            owner=OwnRows("task", Permission.OPERATOR, _others_reduced),
            tool=Tool("list_tasks", "Recent tasks with their states.", ("state", "kind", "limit"))),
    command("tasks.cancel", "Cancel a queued task, or stop a running one (its sandbox is killed).", TaskId, TaskRow,
            Permission.VIEWER, cancel, effect=Effect.WRITE, http=(HttpRoute("POST", f"{ONE}/cancel"),),
            audit=_task_audit, tags=("tasks",), owner=_own(Permission.VIEWER, Permission.OPERATOR)),
    command("tasks.retry", "Run a failed, cancelled or timed-out task again, as a new task.", TaskId, TaskRow,
            Permission.VIEWER, retry, effect=Effect.WRITE, http=(HttpRoute("POST", f"{ONE}/retry", 201),),
            audit=_task_audit, tags=("tasks",), owner=_own(Permission.VIEWER, Permission.OPERATOR)),
    command("tasks.approve", "Let a task waiting for approval run (not its creator's own, unless an admin).",
            TaskDecision, TaskRow, Permission.OPERATOR, approve, effect=Effect.WRITE,
            http=(HttpRoute("POST", f"{ONE}/approve"),), audit=_task_audit, tags=("tasks",), owner=DECIDE),
    command("tasks.reject", "Refuse a task waiting for approval: it is cancelled, saying who and why.",
            TaskDecision, TaskRow, Permission.OPERATOR, reject, effect=Effect.WRITE,
            http=(HttpRoute("POST", f"{ONE}/reject"),), audit=_task_audit, tags=("tasks",), owner=DECIDE),
)
