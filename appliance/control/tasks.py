"""Task commands: create (the reference form included), get with the step log, list, cancel, retry,
approve and reject.

Who may create what: ask and search any signed-in role; notify and the built-in actions an
operator; a declared action the roles it lists (agent.actions.<name>.roles); an inline command
line an admin only. The task runs with its creator's role (appliance/agent/actions.py).

A declared action with ``approval: true`` waits for a second person: the agent moves its task to
waiting_approval, and only someone who may run that action, other than the task's creator (an
admin may approve their own), approves it (back to the queue) or rejects it (cancelled, with why).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from appliance.control.caller import Permission, Role, role_allows
from appliance.control.command import Command, Context, HttpRoute, command
from appliance.control.errors import CommandError
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Empty
from appliance.protocol.tasks import (
    AGENT_CANCEL,
    AGENT_WAKE,
    STORE_TASK_CREATE,
    STORE_TASK_GET,
    STORE_TASK_STEP,
    STORE_TASK_UPDATE,
    STORE_TASKS,
    StepIn,
    TaskDetail,
    TaskDetailQuery,
    TaskFields,
    TaskId,
    TaskKind,
    TaskNew,
    TaskPage,
    TaskQuery,
    TaskRow,
    TaskSpec,
    TaskState,
    TaskUpdate,
)

BUILTIN_NEEDS = {"send_alert": Permission.OPERATOR, "heartbeat": Permission.VIEWER, "archive": Permission.OPERATOR}


class TaskCreate(TaskFields):
    """A task. ``kind`` or, as the reference design writes it, ``command`` (``{"command": "search",
    "query": ..., "output_path": ...}``)."""

    kind: TaskKind | None = None
    command: TaskKind | None = Field(None, description="the reference form's name for kind")
    max_attempts: int = Field(1, ge=1, le=20)

    @model_validator(mode="after")
    def _complete(self) -> TaskCreate:
        kind = self.kind or self.command
        if kind is None:
            raise ValueError("kind (or command) is required: action, command, search, ask or notify")
        needed = {"action": "action", "command": "argv", "search": "query", "ask": "query", "notify": "message"}[kind]
        if getattr(self, needed) is None:
            raise ValueError(f"a {kind} task needs {needed}")
        if any(len(part) > 4096 or "\x00" in part for part in self.argv or []):
            raise ValueError("argv: each element at most 4096 characters, no NUL")
        return self


async def create(ctx: Context, request: TaskCreate) -> TaskRow:
    kind = request.kind or request.command
    assert kind is not None and ctx.caller.role is not None
    role = ctx.caller.role
    authorize(ctx, kind, request.action, role)
    spec = TaskSpec(kind=kind, **request.model_dump(exclude={"kind", "command", "max_attempts"}))
    task = await ctx.peers.store.call(STORE_TASK_CREATE, TaskNew(
        spec=spec, created_by=ctx.caller.subject[:128], role=role.value, max_attempts=request.max_attempts))
    await _wake(ctx)
    return task


def authorize(ctx: Context, kind: str, action: str | None, role: Role) -> None:
    """Refused (forbidden) unless ``role`` may create a task of this kind and action."""
    def refuse(why: str) -> CommandError:
        return CommandError("forbidden", why, field="action" if action else "kind")

    if kind == "command" and role is not Role.ADMIN:
        raise refuse("only an admin may run an inline command line")
    if kind == "notify" and not role_allows(role, Permission.OPERATOR):
        raise refuse("notify needs the operator role")
    if kind != "action":
        return
    assert action is not None
    if action in BUILTIN_NEEDS:
        if not role_allows(role, BUILTIN_NEEDS[action]):
            raise refuse(f"{action} needs the {BUILTIN_NEEDS[action].value} role")
        return
    declared = ctx.config.agent.actions.get(action)
    if declared is None:
        raise CommandError("bad_request", f"no action {action!r}: built-ins are {', '.join(BUILTIN_NEEDS)}, "
                                          f"declared ones are in agent.actions", field="action")
    if role.value not in declared.roles:
        raise refuse(f"a {role.value} may not run {action!r} (allowed: {', '.join(declared.roles)})")


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
        raise CommandError("conflict", f"task {old.id} is {old.state.value}; only a failed, cancelled or timed-out "
                                       "task can be retried")
    assert ctx.caller.role is not None
    authorize(ctx, old.spec.kind, old.spec.action, ctx.caller.role)
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
        raise CommandError("conflict", f"task {task.id} is {task.state.value}, not waiting for approval")
    role = ctx.caller.role
    assert role is not None
    authorize(ctx, task.spec.kind, task.spec.action, role)
    if task.created_by == ctx.caller.subject and role is not Role.ADMIN:
        raise CommandError("forbidden", "someone else must decide on a task you created (or an admin)")
    return task


async def approve(ctx: Context, request: TaskDecision) -> TaskRow:
    await _decidable(ctx, request)
    by = ctx.caller.subject[:128]
    if request.reason:
        await ctx.peers.store.call(STORE_TASK_STEP, StepIn(id=request.id, message=f"approved: {request.reason}"))
    task = await ctx.peers.store.call(STORE_TASK_UPDATE, TaskUpdate(
        id=request.id, state=TaskState.QUEUED, expect=[TaskState.WAITING_APPROVAL], approved_by=by))
    await _wake(ctx)
    return task


async def reject(ctx: Context, request: TaskDecision) -> TaskRow:
    await _decidable(ctx, request)
    why = f"rejected by {ctx.caller.subject}" + (f": {request.reason}" if request.reason else "")
    return await ctx.peers.store.call(STORE_TASK_UPDATE, TaskUpdate(
        id=request.id, state=TaskState.CANCELLED, error=why[:4000], expect=[TaskState.WAITING_APPROVAL]))


def _task_audit(request: Any, reply: TaskRow | None) -> dict[str, Any]:
    return {"task": reply.id if reply else getattr(request, "id", None),
            "kind": reply.spec.kind if reply else getattr(request, "kind", None)}


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("tasks.create", "Queue a task: an action, an inline command (admin), search, ask or notify.", TaskCreate,
            TaskRow, Permission.VIEWER, create, mutating=True, http=(HttpRoute("POST", "/api/v1/tasks", 201),),
            audit=_task_audit, tags=("tasks",)),
    command("tasks.get", "One task with its step log (after_seq: only newer steps, to resume).", TaskDetailQuery,
            TaskDetail, Permission.VIEWER, get, http=(HttpRoute("GET", "/api/v1/tasks/{id}"),), tags=("tasks",)),
    command("tasks.list", "Tasks, newest first, by state, schedule or kind.", TaskQuery, TaskPage, Permission.VIEWER,
            list_tasks, http=(HttpRoute("GET", "/api/v1/tasks"),), tags=("tasks",)),
    command("tasks.cancel", "Cancel a queued task, or stop a running one (its sandbox is killed).", TaskId, TaskRow,
            Permission.OPERATOR, cancel, mutating=True, http=(HttpRoute("POST", "/api/v1/tasks/{id}/cancel"),),
            audit=_task_audit, tags=("tasks",)),
    command("tasks.retry", "Run a failed, cancelled or timed-out task again, as a new task.", TaskId, TaskRow,
            Permission.OPERATOR, retry, mutating=True, http=(HttpRoute("POST", "/api/v1/tasks/{id}/retry", 201),),
            audit=_task_audit, tags=("tasks",)),
    command("tasks.approve", "Let a task waiting for approval run (not its creator's own, unless an admin).",
            TaskDecision, TaskRow, Permission.OPERATOR, approve, mutating=True,
            http=(HttpRoute("POST", "/api/v1/tasks/{id}/approve"),), audit=_task_audit, tags=("tasks",)),
    command("tasks.reject", "Refuse a task waiting for approval: it is cancelled, saying who and why.",
            TaskDecision, TaskRow, Permission.OPERATOR, reject, mutating=True,
            http=(HttpRoute("POST", "/api/v1/tasks/{id}/reject"),), audit=_task_audit, tags=("tasks",)),
)
