"""What each kind of task does: built-in actions, declared sandboxed actions, inline commands, ask, search, notify.

Everything that reaches another service goes through the command table as the task's creator
(``task:<id>`` with the creator's role), so a task can do no more than its creator could by hand,
and it is audited the same way. Sandboxed runs go through sandbox.py, or through the root helper
(helper.py) where the agent's unit does not let it start bwrap itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import JsonValue

from appliance.agent import sandbox
from appliance.agent.helper import run_via_helper
from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role
from appliance.control.chat import ChatEvent
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.protocol.tasks import TaskRow

# A step of the task's log; data {"percent": N, ...} also moves the task's progress (runner.py).
Step = Callable[[str, JsonValue], Awaitable[None]]
PROGRESS_EVERY_TOKENS = 32
ANSWER_TOKENS = 512
SANDBOX_TAIL = 2000


class ActionFailed(Exception):
    def __init__(self, message: str, result: JsonValue = None) -> None:
        super().__init__(message)
        self.result = result


class Actions:
    def __init__(self, config: ApplianceConfig, commands: Dispatcher) -> None:
        self.config = config
        self.commands = commands
        state = config.paths.state_dir
        self.workspaces = config.agent.workspace_dir or state / "workspaces"
        self.outputs = config.agent.output_dirs or [state / "outputs"]

    def names(self) -> set[str]:
        return set(self.config.agent.actions)

    async def run(self, task: TaskRow, step: Step) -> JsonValue:
        caller = Caller(f"task:{task.id}", Role(task.role), "agent")
        spec = task.spec
        try:
            if spec.kind == "notify" or (spec.kind == "action" and spec.action == "send_alert"):
                return await self._alert(caller, task, step)
            if spec.kind == "action" and spec.action == "heartbeat":
                health = await self.commands.call("system.health", {}, caller)
                return health.model_dump(mode="json")
            if spec.kind == "action" and spec.action == "archive":
                items = [item.model_dump(mode="json") async for item in self.commands.stream(
                    "memory.archive", {}, caller)]
                return items[-1] if items else None
            if spec.kind in ("action", "command"):
                return await self._sandboxed(task, step)
            if spec.kind in ("ask", "search"):
                return await self._answer(caller, task, step)
        except CommandError as exc:
            raise ActionFailed(f"{exc.code}: {exc.message}") from None
        raise ActionFailed(f"nothing runs a {spec.kind} task with action {spec.action!r}")

    async def _alert(self, caller: Caller, task: TaskRow, step: Step) -> JsonValue:
        """send_alert / notify: an MQTT topic (the site's broker), every WebSocket client subscribed to
        messages (the admin page, the phone app) and, when an uplink is configured, the outbox."""
        spec = task.spec
        text = spec.message or str(spec.args.get("message") or "") or _describe(spec.input) or "alert"
        payload: JsonValue = {"task": task.id, "message": text, "input": spec.input, "by": task.created_by}
        sent: dict[str, JsonValue] = {}
        try:
            topic = spec.topic or self.config.agent.alert_topic
            published = await self.commands.call("devices.publish", {"topic": topic, "payload": payload}, caller)
            sent["mqtt"] = published.model_dump(mode="json")
        except CommandError as exc:
            sent["mqtt_error"] = exc.message
        try:
            reached = await self.commands.call("messages.broadcast", {"kind": "alert", "text": text[:4000],
                                                                      "data": payload}, caller)
            sent["websocket_clients"] = reached.model_dump()["changed"]
        except CommandError as exc:
            sent["websocket_error"] = exc.message
        uplink = self.config.mqtt.uplink
        for target, configured in (("webhook", uplink.webhook), ("mqtt", uplink.mqtt)):
            if configured is not None:
                item = await self.commands.call("outbox.enqueue", {"target": target, "topic": "alerts",
                                                                   "payload": payload}, caller)
                sent[f"outbox_{target}"] = item.model_dump(mode="json")["id"]
        await step("alert sent", sent)
        if not ("mqtt" in sent or sent.get("websocket_clients") or any(k.startswith("outbox_") for k in sent)):
            raise ActionFailed(f"the alert reached nobody: {sent.get('mqtt_error') or 'no broker'}; "
                               f"WebSocket: {sent.get('websocket_error') or 'nobody subscribed'}", sent)
        return sent

    async def _sandboxed(self, task: TaskRow, step: Step) -> JsonValue:
        spec = task.spec
        agent = self.config.agent
        if spec.kind == "command":
            if task.role != "admin":
                raise ActionFailed("only an admin may run an inline command")
            argv = list(spec.argv or [])
            limits, profile = agent.default_limits, sandbox.Profile(limits=agent.default_limits,
                                                                    readable=agent.command_readable,
                                                                    workdir=agent.scripts_dir)
        else:
            declared = agent.actions.get(spec.action or "")
            if declared is None:
                raise ActionFailed(f"no action {spec.action!r} is declared (agent.actions)")
            if task.role not in declared.roles:
                raise ActionFailed(f"a {task.role} may not run {spec.action!r} (allowed: {', '.join(declared.roles)})")
            try:
                jsonschema.validate(spec.args, declared.args_schema)
            except jsonschema.ValidationError as exc:
                where = "/".join(str(part) for part in exc.absolute_path) or "(args)"
                raise ActionFailed(f"args: {where}: {exc.message}") from None
            argv = [_fill(part, spec.args) for part in declared.command]
            limits = declared.limits
            profile = sandbox.Profile(limits=limits, network=declared.network, env=declared.env,
                                      readable=declared.readable, writable=declared.writable, workdir=agent.scripts_dir)
        helper = agent.sandbox_helper
        through_helper = helper is not None and await asyncio.to_thread(helper.exists)
        await step("sandbox start", {"argv": list[JsonValue](argv), "limits": limits.model_dump(),
                                     "network": profile.network, "helper": through_helper})
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
        result: JsonValue = {"exit_code": outcome.exit_code, "signal": outcome.signal, "limit": outcome.limit,
                             "stdout": outcome.stdout[-SANDBOX_TAIL:], "stderr": outcome.stderr[-SANDBOX_TAIL:],
                             "truncated": outcome.truncated, "wall_s": round(outcome.wall_s, 3)}
        await step(f"sandbox end: {outcome.summary()}", result)
        if not outcome.ok:
            raise ActionFailed(outcome.summary(), result)
        return result

    async def _answer(self, caller: Caller, task: TaskRow, step: Step) -> JsonValue:
        spec = task.spec
        query = spec.query or ""
        message = query if spec.kind == "ask" else (
            f"Summarise what the notes say about: {query}\nCite the notes you use as [n].")
        pieces: list[str] = []
        done: Any = None
        request = {"message": message, "k": 8 if spec.kind == "search" else 4, "max_tokens": ANSWER_TOKENS,
                   "priority": spec.priority}
        async with contextlib.aclosing(self.commands.stream("chat", request, caller)) as events:
            async for event in events:
                assert isinstance(event, ChatEvent)
                if event.type == "token":
                    pieces.append(event.text)
                    if len(pieces) % PROGRESS_EVERY_TOKENS == 0:  # recall done (10 %), then the answer
                        percent = 10 + int(85 * len(pieces) / ANSWER_TOKENS)
                        await step("generating", {"percent": percent, "tokens": len(pieces)})
                else:
                    done = event
        answer = "".join(pieces).strip()
        citations = [c.model_dump(mode="json") for c in done.citations] if done is not None else []
        result: dict[str, JsonValue] = {"answer": answer, "citations": citations}
        if spec.output_path:
            path = await asyncio.to_thread(self._write_output, spec.output_path, _report(query, answer, citations))
            result["output_path"] = str(path)
            await step("written", {"path": str(path)})
        return result

    def _write_output(self, wanted: str, text: str) -> Path:
        """Write atomically (a temporary file, then rename) under an allowed folder, never beside it."""
        base = self.outputs[0]
        target = Path(wanted) if Path(wanted).is_absolute() else base / wanted
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        real = folder.resolve(strict=True) / target.name
        inside = any(real.is_relative_to(allowed.resolve()) for allowed in self.outputs)
        if not inside or target.name in ("", ".", ".."):
            raise ActionFailed(f"output_path {wanted!r} is outside the allowed folders "
                               f"({', '.join(str(p) for p in self.outputs)})")
        temporary = real.with_name(f".{real.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(real)
        return real


def _fill(part: str, args: dict[str, JsonValue]) -> str:
    """``{name}`` as a whole argv element becomes that argument, as one element: no shell ever sees it."""
    if part.startswith("{") and part.endswith("}"):
        value = args.get(part[1:-1])
        if value is None:
            raise ActionFailed(f"args: {part[1:-1]}: required by the command")
        return value if isinstance(value, str) else str(value)
    return part


def _describe(given: JsonValue) -> str:
    if isinstance(given, dict) and given.get("error"):
        return f"{given.get('schedule', 'a task')} {given.get('state', 'failed')}: {given['error']}"
    return ""


def _report(query: str, answer: str, citations: list[dict[str, Any]]) -> str:
    notes = "\n".join(f"[{c['n']}] memory {c['memory_id']} ({c['source']}): {c['snippet']}" for c in citations)
    return f"# {query}\n\n{answer or '(no answer)'}\n\n## Notes\n\n{notes or '(none found)'}\n"
