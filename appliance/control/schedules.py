"""Schedule commands: list and read every schedule (the file's and the saved ones, with when each
last fired and fires next); create, replace and delete the saved ones.

A schedule saved here runs its tasks with its author's role (Schedule.run_as), and saving it is
checked like creating those tasks by hand (control/tasks.py: an inline command line needs an
admin; a declared action the roles it lists), for its action and its fallback alike. The file's
schedules are the admin's and read-only here: a name the file uses is refused (409). After a
change the agent is told to reload; if it is away it reads them when it starts.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from appliance.config import ConfigError
from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, OwnRow, Reply, Tool, command
from appliance.control.errors import CommandError
from appliance.control.tasks import check_spec
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Message
from appliance.protocol.schedules import (
    AGENT_SCHEDULES_RELOAD,
    STORE_SCHEDULE_DELETE,
    STORE_SCHEDULE_PUT,
    STORE_SCHEDULES,
    ScheduleName,
    SchedulePut,
    StoredSchedule,
)
from appliance.protocol.tasks import STORE_SCHEDULE_MARKS
from appliance.schedules.model import Schedule, ScheduleFields, load_schedules
from appliance.schedules.triggers import next_fire
from appliance.taskkinds.action import action_names

MAX_SAVED = 10_000


class ScheduleView(Message):
    schedule: Schedule
    source: Literal["file", "saved"]
    updated_by: str = ""
    updated_at: float | None = None
    last_fire: float | None = Field(None, description="when it last fired (unix time)")
    next_fire: float | None = Field(None, description="when it fires next; none for mqtt: triggers, a past at: "
                                                      "or a disabled schedule")


class ScheduleViews(Message):
    items: list[ScheduleView]
    file_error: str = Field("", description="why the schedules file could not be read (its schedules are missing)")


async def _file(ctx: Context) -> tuple[list[Schedule], str]:
    path = ctx.config.agent.schedules_file
    if path is None:
        return [], ""
    try:
        return await asyncio.to_thread(load_schedules, path), ""
    except ConfigError as exc:
        return [], str(exc)


def _view(schedule: Schedule, source: Literal["file", "saved"], marks: dict[str, float],
          saved: StoredSchedule | None = None) -> ScheduleView:
    last = marks.get(schedule.name)
    upcoming = None
    if schedule.enabled:
        last_at = datetime.fromtimestamp(last, UTC) if last is not None else None
        at = next_fire(schedule.parsed_trigger(), datetime.now(UTC), schedule.tz, last_at)
        upcoming = at.timestamp() if at is not None else None
    return ScheduleView(schedule=schedule, source=source, updated_by=saved.updated_by if saved else "",
                        updated_at=saved.updated_at if saved else None, last_fire=last, next_fire=upcoming)


async def list_schedules(ctx: Context, _: Empty) -> ScheduleViews:
    (file, error), saved, marks = await asyncio.gather(
        _file(ctx), ctx.peers.store.call(STORE_SCHEDULES, Empty()), ctx.peers.store.call(STORE_SCHEDULE_MARKS, Empty()))
    views = [_view(schedule, "file", marks.marks) for schedule in file]
    for item in saved.items:
        try:
            views.append(_view(Schedule.of_saved(item), "saved", marks.marks, item))
        except ValueError as exc:  # saved by an older release whose rules were looser
            error += f"{'; ' if error else ''}saved schedule {item.name!r} is no longer valid: {exc}"
    return ScheduleViews(items=sorted(views, key=lambda view: view.schedule.name), file_error=error)


async def get(ctx: Context, request: ScheduleName) -> ScheduleView:
    for view in (await list_schedules(ctx, Empty())).items:
        if view.schedule.name == request.name:
            return view
    raise CommandError("not_found", Phrase("schedule.not_found", name=request.name), field="name")


async def _save(ctx: Context, fields: ScheduleFields, mode: Literal["create", "replace"]) -> ScheduleView:
    assert ctx.caller.role is not None
    file, _ = await _file(ctx)
    if any(schedule.name == fields.name for schedule in file):
        raise CommandError("conflict", Phrase("schedule.in_file", name=fields.name,
                                              file=str(ctx.config.agent.schedules_file)), field="name")
    schedule = Schedule.model_validate({**fields.model_dump(), "run_as": ctx.caller.role.value})
    actions = action_names(ctx.config)
    for what, key in ((schedule.action, "action"), (schedule.fallback, "fallback")):
        if what is not None:
            try:
                check_spec(ctx, schedule.task(actions, what=what), ctx.caller.role)
            except CommandError as exc:
                raise CommandError(exc.code, f"{key}: {exc.message}", field=key, phrase=exc.phrase) from None
    if mode == "create" and len((await ctx.peers.store.call(STORE_SCHEDULES, Empty())).items) >= MAX_SAVED:
        raise CommandError("conflict", Phrase("schedule.too_many", n=MAX_SAVED))
    saved = await ctx.peers.store.call(STORE_SCHEDULE_PUT, SchedulePut(mode=mode, schedule=StoredSchedule(
        name=fields.name, body=fields.model_dump(mode="json", exclude={"name"}, exclude_defaults=True),
        run_as=ctx.caller.role.value, updated_by=ctx.caller.subject[:128], updated_at=time.time())))
    await _reload(ctx)
    return _view(schedule, "saved", {}, saved)


async def create(ctx: Context, request: ScheduleFields) -> ScheduleView:
    return await _save(ctx, request, "create")


async def replace(ctx: Context, request: ScheduleFields) -> ScheduleView:
    return await _save(ctx, request, "replace")


async def delete(ctx: Context, request: ScheduleName) -> Reply:
    if any(schedule.name == request.name for schedule in (await _file(ctx))[0]):
        raise CommandError("conflict", Phrase("schedule.in_file", name=request.name,
                                              file=str(ctx.config.agent.schedules_file)), field="name")
    await ctx.peers.store.call(STORE_SCHEDULE_DELETE, request)
    await _reload(ctx)
    return Reply(detail=f"schedule {request.name!r} deleted")


async def _reload(ctx: Context) -> None:
    try:
        await ctx.peers.agent.call(AGENT_SCHEDULES_RELOAD, Empty(), timeout_s=5.0)
    except IpcError as exc:
        ctx.log.info("the agent was not told to reload its schedules (%s); it reads them when it starts", exc)


def _audit(request: Any, _reply: Any) -> dict[str, Any]:
    return {"schedule": getattr(request, "name", None)}


async def schedule_owner(ctx: Context, request: ScheduleName | ScheduleFields) -> str | None:
    """Who saved it last; None for the file's (read-only for everyone: the handler says so) and for no
    such schedule."""
    for item in (await ctx.peers.store.call(STORE_SCHEDULES, Empty())).items:
        if item.name == request.name:
            return item.updated_by
    return None


# Anyone reads every schedule (they are the site's); a saved one is changed by whoever saved it, or an admin.
AUTHOR = OwnRow("schedule", "name", schedule_owner, own=Permission.OPERATOR, others=Permission.ADMIN)
ONE = "/api/v1/schedules/{name}"
COMMANDS: tuple[Command[Any, Any], ...] = (
    command("schedules.list", "Every schedule (the file's and the saved ones) with its last and next fire.", Empty,
            ScheduleViews, Permission.VIEWER, list_schedules, effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/schedules"),), tags=("schedules",),
            tool=Tool("list_schedules", "The site's schedules with when each fires next.")),
    command("schedules.get", "One schedule.", ScheduleName, ScheduleView, Permission.VIEWER, get, effect=Effect.READ,
            http=(HttpRoute("GET", ONE),), tags=("schedules",)),
    command("schedules.create", "Save a new schedule in the reference form; its tasks run with your role.",
            ScheduleFields, ScheduleView, Permission.OPERATOR, create, effect=Effect.WRITE,
            http=(HttpRoute("POST", "/api/v1/schedules", 201),), audit=_audit, tags=("schedules",),
            tool=Tool("create_schedule", "Save a schedule: a name, a trigger (cron:, interval:, at:) and an action.",
                      ("name", "trigger", "action", "args", "timezone"))),
    command("schedules.replace", "Replace a saved schedule (the file's are read-only).", ScheduleFields, ScheduleView,
            Permission.OPERATOR, replace, effect=Effect.WRITE, http=(HttpRoute("PUT", ONE),), audit=_audit,
            tags=("schedules",), owner=AUTHOR),
    command("schedules.delete", "Delete a saved schedule (the file's are read-only).", ScheduleName, Reply,
            Permission.OPERATOR, delete, effect=Effect.WRITE, http=(HttpRoute("DELETE", ONE),), audit=_audit,
            tags=("schedules",), owner=AUTHOR),
)
