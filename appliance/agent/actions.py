"""Running one task: its kind's declaration (appliance/taskkinds/) does the work; this module gives it
the caller it acts as and the sandbox it may use.

The caller is the task's creator acting for this task (``Caller.for_task``): everything that reaches
another service goes through the command table with the creator's role, so a task can do no more
than its creator could by hand, its owner rules are the creator's, and every call it makes is
audited with the task's id. Sandboxed runs go through sandbox.py, or through the root helper
(helper.py) where the agent's unit does not let it start bwrap itself.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from appliance.agent import sandbox
from appliance.agent.helper import run_via_helper
from appliance.config import ApplianceConfig, SandboxLimits
from appliance.control.caller import Caller, Permission, Role, role_allows
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.tasks import STORE_TASK_GET, TaskDetailQuery, TaskRow
from appliance.taskkinds import KINDS
from appliance.taskkinds.action import action_names
from appliance.taskkinds.base import Ran, RunFailed, Running, Sandbox, Step

SANDBOX_TAIL = 2000


class Actions:
    def __init__(self, config: ApplianceConfig, dispatcher: Dispatcher, log: logging.Logger) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.log = log
        self.workspaces = config.agent.workspace_dir or config.paths.state_dir / "workspaces"

    def names(self) -> set[str]:
        """Every action a schedule may name: the built-in and the declared ones."""
        return action_names(self.config)

    async def run(self, task: TaskRow, step: Step) -> JsonValue:
        kind = KINDS.get(task.spec.kind)
        if kind is None:
            raise RunFailed(Phrase("task.kind_gone", kind=task.spec.kind))
        role = Role(task.role)
        if not role_allows(role, Permission(kind.least_role.value)):
            raise RunFailed(Phrase("task.runs_without_role", kind=kind.name, role=kind.least_role.value,
                                       runs_as=role.value))
        caller = Caller(task.created_by, role, "agent").for_task(task.id)

        async def history() -> list[dict[str, Any]]:
            detail = await self.dispatcher.peers.store.call(STORE_TASK_GET, TaskDetailQuery(id=task.id, steps=1000))
            return [step.model_dump(mode="json") for step in detail.steps]

        running = Running(task, caller, self.dispatcher, self.config, step, self._sandbox(task, step), self.log,
                          history)
        try:
            return await kind.run(running, kind.stored(task.spec.fields()))
        except CommandError as exc:
            text = f"{exc.code}: {exc.message}"
            raise RunFailed(exc.phrase.phrase().worded(text) if exc.phrase else text) from None

    def _sandbox(self, task: TaskRow, step: Step) -> Sandbox:
        agent = self.config.agent

        async def run(argv: list[str], *, limits: SandboxLimits, network: bool = False,
                      env: dict[str, str] | None = None, readable: list[Path] | None = None,
                      writable: list[Path] | None = None) -> Ran:
            profile = sandbox.Profile(limits=limits, network=network, env=env or {}, readable=readable or [],
                                      writable=writable or [], workdir=agent.scripts_dir)
            helper = agent.sandbox_helper
            through_helper = helper is not None and await asyncio.to_thread(helper.exists)
            await step("sandbox start", {"argv": list[JsonValue](argv), "limits": limits.model_dump(),
                                         "network": network, "helper": through_helper})
            if through_helper:
                assert helper is not None
                outcome = await run_via_helper(helper, argv, profile)
            else:
                workspace = self.workspaces / f"task-{task.id}-{task.attempts}"
                await asyncio.to_thread(sandbox.make_workspace, workspace)
                try:
                    outcome = await sandbox.run(argv, profile, workspace)
                finally:
                    await asyncio.to_thread(shutil.rmtree, workspace, True)
            result: dict[str, JsonValue] = {
                "exit_code": outcome.exit_code, "signal": outcome.signal, "limit": outcome.limit,
                "stdout": outcome.stdout[-SANDBOX_TAIL:], "stderr": outcome.stderr[-SANDBOX_TAIL:],
                "truncated": outcome.truncated, "wall_s": round(outcome.wall_s, 3)}
            await step(Phrase("task.sandbox_end", summary=outcome.summary()), result)
            return Ran(result, outcome.ok, outcome.summary())

        return run
