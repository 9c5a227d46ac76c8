"""The schedules file in the reference form, validated like the config: errors name the schedule and key.

    tasks:
      - name: "log_monitor"
        trigger: "cron:*/5 * * * *"
        action: "python check_logs.py"     # a command line (admins' file: run in the default sandbox)
        fallback: "send_alert"             # a built-in or declared action, given the failure as input

``action`` is a declared or built-in action's name, else a command line split without a shell
(shlex) and run as a shell task, or ``{"agent": "<goal>"}``: the agent pursues that goal, given
the event that fired an mqtt: trigger as its input (what perceiving the site means). Optional per
schedule: args, retries and retry_backoff_s, timeout_s, concurrency (skip, queue, parallel with
max_parallel), timezone, missed (skip, once, all with missed_max), priority, debounce_s (mqtt:
triggers).

A schedule is what its author wrote (ScheduleFields: what the REST body holds) plus the role its
tasks run with (Schedule.run_as): admin for the admin's file, the author's own role for one saved
through the commands, so a schedule never does more than the one who saved it may.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from appliance.config import ConfigError
from appliance.protocol.common import Message
from appliance.protocol.schedules import StoredSchedule
from appliance.protocol.tasks import Priority, TaskSpec
from appliance.schedules.triggers import Trigger, parse_trigger

MAX_FILE_BYTES = 1 << 20
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class AgentGoal(Message):
    agent: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="the goal, in a person's words")


class ScheduleFields(Message):
    name: str = Field(pattern=NAME)
    trigger: str = Field(min_length=4, max_length=300)
    action: str | AgentGoal = Field(description="an action's name, a command line, or {\"agent\": goal}")
    args: dict[str, JsonValue] = Field(default_factory=dict)
    fallback: str | None = Field(None, min_length=1, max_length=4000)
    retries: int = Field(0, ge=0, le=10)
    retry_backoff_s: float = Field(30.0, ge=0, le=86_400, description="doubles after each failed attempt")
    timeout_s: float = Field(300.0, gt=0, le=86_400)
    concurrency: Literal["skip", "queue", "parallel"] = "skip"
    max_parallel: int = Field(2, ge=1, le=64)
    timezone: str = Field("UTC", max_length=64)
    missed: Literal["skip", "once", "all"] = "once"
    missed_max: int = Field(10, ge=1, le=1000)
    priority: Priority = "scheduled"
    debounce_s: float = Field(10.0, ge=0, le=86_400, description="mqtt: triggers: at most one task per window")
    enabled: bool = True

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (e.g. Europe/Berlin, UTC)") from None
        return value

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        parse_trigger(value, ZoneInfo("UTC"))
        return value

    @field_validator("action", "fallback")
    @classmethod
    def _command_line(cls, value: str | AgentGoal | None) -> str | AgentGoal | None:
        if isinstance(value, str):
            if not 0 < len(value) <= 4000:
                raise ValueError("an action's name or a command line of 1 to 4000 characters")
            try:
                words = shlex.split(value)
            except ValueError as exc:  # an unclosed quote
                raise ValueError(f"not a command line: {exc}") from None
            if not words or "\x00" in value:
                raise ValueError("an action's name or a command line, without NUL characters")
        return value


class Schedule(ScheduleFields):
    run_as: Literal["admin", "operator", "viewer"] = "admin"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def parsed_trigger(self) -> Trigger:
        return parse_trigger(self.trigger, self.tz)

    def task(self, actions: set[str], what: str | AgentGoal | None = None, given: JsonValue = None) -> TaskSpec:
        """The task one fire creates (``what``: the fallback's text instead of the action's)."""
        chosen = what or self.action
        if isinstance(chosen, AgentGoal):
            return TaskSpec(kind="agent", goal=chosen.agent, timeout_s=self.timeout_s, priority=self.priority,
                            input=given)
        return spec_of(chosen, actions, self.args if what is None else {}, timeout_s=self.timeout_s,
                       priority=self.priority, given=given)


    @classmethod
    def of_saved(cls, saved: StoredSchedule) -> Schedule:
        """A schedule saved through the commands, as its author wrote it and with its author's role
        (ValidationError if an older release stored one today's rules refuse)."""
        return cls.model_validate({**saved.body, "name": saved.name, "run_as": saved.run_as})


def spec_of(text: str, actions: set[str], args: dict[str, JsonValue], *, timeout_s: float, priority: Priority,
            given: JsonValue = None) -> TaskSpec:
    """A name of an action (``actions``: the built-in and declared ones) is that action; anything
    else is a command line, run as a shell task (an argv: no shell ever sees it)."""
    if text in actions:
        return TaskSpec(kind="action", action=text, args=args, timeout_s=timeout_s, priority=priority, input=given)
    return TaskSpec(kind="shell", argv=shlex.split(text), timeout_s=timeout_s, priority=priority, input=given)


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[Schedule] = Field(default_factory=list, max_length=10_000)


def load_schedules(path: Path) -> list[Schedule]:
    """The file's schedules; ConfigError naming the schedule and the key when one is wrong."""
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read schedules: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data: Any = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    try:
        loaded = ScheduleFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = list(error["loc"])
        if len(where) >= 2 and where[0] == "tasks" and isinstance(where[1], int):
            items = data.get("tasks") if isinstance(data, dict) else None
            entry = items[where[1]] if isinstance(items, list) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            where[1] = f"[{name or where[1]}]"
        key = re.sub(r"\.\[", "[", ".".join(str(part) for part in where))
        raise ConfigError(f"{path}: {key}: {error['msg']}") from None
    names = [schedule.name for schedule in loaded.tasks]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"{path}: tasks: duplicate schedule name {duplicated[0]!r}")
    return list(loaded.tasks)
