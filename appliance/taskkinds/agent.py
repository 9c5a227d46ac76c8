"""agent: a goal in a person's words, perceived, decided and acted on by the box's own model
(appliance/loop/: the tools, the plan, the execution, the defences and the answer).

The run acts with its creator's role through the command table, so it can do no more than they
could by hand. When a call must wait for a person (the run's plan was made after it read
untrusted data, and the call would act or leave the box), the task waits in waiting_approval
showing the tool and its arguments; approved (tasks.approve), it makes exactly that call, bound
to those arguments, and reports; rejected, it is cancelled. A run cut short (the agent or the
engine restarted) is not run again: it may have acted already.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, JsonValue

from appliance.control.caller import Role
from appliance.control.errors import CommandError
from appliance.loop import tools
from appliance.loop.run import AgentRun, NeedsApproval, RunStopped, run_agent
from appliance.phrases import Phrase, said
from appliance.protocol.common import Message
from appliance.taskkinds.base import RunFailed, Running, TaskKind, WaitsForApproval

APPROVAL_STEP = "approval needed"


class AgentFields(Message):
    goal: str = Field(min_length=1, max_length=2000, pattern=r"\S",
                      description="what to do or find out, in the person's own words (English or Chinese)")


async def _approved_call(running: Running) -> dict[str, Any] | None:
    """The call a person approved for this task: the last one its log asked approval for."""
    if running.task.approved_by is None or running.history is None:
        return None
    for step in reversed(await running.history()):
        if step.get("message") == APPROVAL_STEP and isinstance(step.get("data"), dict):
            return dict(step["data"])
    return None


async def _make_approved(running: Running, pending: dict[str, Any]) -> JsonValue:
    """Exactly the approved call (its fingerprint binds these arguments), then the report."""
    caller = running.caller.for_task(running.task.id, untrusted=True,
                                     approved=frozenset({str(pending["fingerprint"])}))
    body: JsonValue
    try:
        reply = await running.dispatcher.call(str(pending["command"]), dict(pending["args"]), caller)
    except CommandError as exc:
        outcome: str = exc.code
        body = {"error": exc.message}
    else:
        body = reply.model_dump(mode="json")
        outcome = str(body.get("outcome", "ok")) if isinstance(body, dict) else "ok"
    await running.step(Phrase("task.approved_call_done", tool=str(pending["tool"]), outcome=outcome,
                              by=str(running.task.approved_by)),
                       {"tool": pending["tool"], "args": pending["args"], "outcome": outcome})
    return {"answer": f"{pending['tool']} was {'done' if outcome in ('ok', 'confirmed') else outcome} after "
                      f"{running.task.approved_by} approved it.",
            "actions": [{"tool": pending["tool"], "args": pending["args"], "outcome": outcome, "result": body}],
            "tokens": {"prompt": 0, "completion": 0}, "seconds": 0.0}


async def run(running: Running, fields: AgentFields) -> JsonValue:
    pending = await _approved_call(running)
    if pending is not None:
        return await _make_approved(running, pending)
    capabilities = (await running.call("capabilities", {})).model_dump(mode="json")
    agent = AgentRun(running.dispatcher, running.caller, fields.goal, running.step, event=running.task.spec.input,
                     priority=running.task.spec.priority, temperature=running.config.agent.plan_temperature)
    try:
        return await run_agent(agent, tools.offered(capabilities))
    except NeedsApproval as exc:
        await running.step(APPROVAL_STEP, {"tool": exc.tool, "command": exc.command, "args": exc.call_args,
                                           "fingerprint": exc.fingerprint, "why": str(exc)})
        raise WaitsForApproval(Phrase("task.waits_for_approval", tool=exc.tool, args=json.dumps(exc.call_args),
                                      why=str(exc))) from None
    except RunStopped as exc:
        raise RunFailed(said(exc)) from None


KIND = TaskKind("agent", "A goal in your own words: the box's model plans with the tools you may use, acts, "
                "and answers.", AgentFields, Role.VIEWER, run, model_work=True)
