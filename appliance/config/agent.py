"""The agent section: tasks, schedules, sandbox limits and declared sandboxed actions (docs/tasks.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from appliance.config.base import Section


class SandboxLimits(Section):
    cpu_s: int = Field(60, ge=1, le=86_400, description="CPU seconds")
    memory_mib: int = Field(512, ge=16, le=1 << 20, description="address space")
    processes: int = Field(64, ge=1, le=10_000, description="processes and threads (the fork-bomb guard)")
    wall_s: float = Field(300.0, gt=0, le=86_400, description="killed at this deadline")
    output_bytes: int = Field(65_536, ge=1024, le=16 << 20, description="kept of stdout and of stderr, each")
    file_mib: int = Field(64, ge=1, le=1 << 20, description="largest file it may write")
    open_files: int = Field(256, ge=16, le=65_536)


RoleName = Literal["admin", "operator", "viewer"]


class ActionConfig(Section):
    """A sandboxed action: an argv (never a shell string) whose ``{name}`` elements are arguments."""

    command: list[str] = Field(min_length=1, max_length=256)
    description: str = Field("", max_length=500)
    args_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "additionalProperties": False},
                                        description="JSON schema of the arguments")
    env: dict[str, str] = Field(default_factory=dict, description="the only environment it gets, besides PATH/HOME")
    network: bool = Field(False, description="share the box's network (none by default)")
    readable: list[Path] = Field(default_factory=list, max_length=32, description="extra paths, read-only")
    writable: list[Path] = Field(default_factory=list, max_length=32, description="paths it may write besides /work")
    limits: SandboxLimits = SandboxLimits()
    roles: list[RoleName] = Field(default_factory=lambda: list[RoleName](["admin", "operator"]),
                                  description="who may run it")
    approval: bool = Field(False, description="each run waits until a person approves it (tasks.approve): "
                                              "someone of its roles other than its creator, or an admin")

    @field_validator("command")
    @classmethod
    def _placeholders_whole(cls, value: list[str]) -> list[str]:
        for part in value:
            if "{" in part and not re.fullmatch(r"\{[a-z_][a-z0-9_]{0,63}\}", part):
                raise ValueError(f"{part!r}: an argument placeholder must be a whole element, like '{{path}}'")
        return value


class AgentConfig(Section):
    heartbeat_interval_s: float = Field(30.0, ge=0.1, le=86_400)
    backfill_interval_s: float = Field(60.0, ge=0.1, le=86_400,
                                       description="how often memories stored without a vector are embedded")
    max_parallel_tasks: int = Field(4, ge=1, le=256, description="tasks running at once besides model work")
    schedules_file: Path | None = Field(None, description="the reference form's tasks: list (YAML)")
    scripts_dir: Path | None = Field(None, description="read-only working directory of inline commands")
    command_readable: list[Path] = Field(default_factory=list, max_length=32,
                                         description="paths inline commands may read (e.g. the logs they check)")
    output_dirs: list[Path] = Field(default_factory=list, max_length=16,
                                    description="where output_path may write; default <state_dir>/outputs")
    workspace_dir: Path | None = Field(None, description="per-run workspaces; default <state_dir>/workspaces")
    default_limits: SandboxLimits = Field(SandboxLimits(), description="limits of inline commands")
    alert_topic: str = Field("appliance/alerts", min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")
    sandbox_helper: Path | None = Field(Path("/run/appliance-sandbox.sock"),
                                        description="when this socket exists (the systemd units), sandboxed runs go "
                                                    "through the root helper behind it; else the agent runs bwrap")
    actions: dict[str, ActionConfig] = Field(default_factory=dict, max_length=256)
    plan_temperature: float = Field(0.0, ge=0.0, le=2.0, description="the agent's planning temperature (0: greedy; "
                                                                      "the evaluation samples to measure pass^k)")

    @field_validator("actions")
    @classmethod
    def _action_names(cls, value: dict[str, ActionConfig]) -> dict[str, ActionConfig]:
        for name in value:
            # Not a built-in's name either: checked where the built-ins are declared (taskkinds/action.py).
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"{name!r}: action names are lower_snake_case")
        return value
