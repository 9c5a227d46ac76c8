"""Running a plan's steps: in order, through the command table, each checked, timed and recorded.

A step's call goes through the dispatcher as the task's creator acting for the task, so the
creator's role, the owner rules, the audit and the provenance rule all apply. What a step read is
reduced to a typed value for conditions (``value``): a number, or a short word matching WORD;
anything else is no value at all, so no free text an attacker wrote can steer a condition. The
same call twice ends the run; a call whose effect would act while the plan is tainted is refused
by the dispatcher (approval_required) and becomes NeedsApproval.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher, call_fingerprint
from appliance.control.errors import CommandError
from appliance.loop.planner import Step
from appliance.loop.tools import OfferedTool
from appliance.phrases import PhraseWire

TOOL_TIMEOUT_S = 30.0
WORD = re.compile(r"^[A-Za-z0-9_ .:-]{1,32}$")
# Tools whose replies carry what devices, files or people other than staff wrote.
UNTRUSTED_READS = frozenset({"get_entity", "list_entities", "search_memory", "get_device", "list_devices",
                             "get_task", "list_tasks"})


class NeedsApproval(Exception):
    """A call the run may make only once a person approves exactly it."""

    def __init__(self, tool: str, command: str, args: dict[str, Any], fingerprint: str, why: str) -> None:
        super().__init__(why)
        self.tool, self.command, self.call_args, self.fingerprint = tool, command, args, fingerprint


@dataclass
class Done:
    """One executed (or skipped) step, for the log, the answer and the result."""

    n: int
    tool: str
    args: dict[str, Any]
    effect: str
    outcome: str  # ok, skipped, or an error code / a refusal
    detail: str = ""
    value: float | str | None = None
    reply: Any = None
    ms: float = 0.0
    phrase: PhraseWire | None = None  # the detail by code, when the box refused in its own words

    def summary(self) -> str:
        if self.outcome == "skipped":
            return f"step {self.n} {self.tool}: skipped ({self.detail})"
        return f"step {self.n} {self.tool}({json.dumps(self.args, ensure_ascii=False)[:200]}): {self.outcome}" + (
            f": {self.detail}" if self.detail else "")


@dataclass
class Executor:
    dispatcher: Dispatcher
    caller: Caller
    tools: dict[str, OfferedTool]
    event_value: float | str | None = None
    done: list[Done] = field(default_factory=list)
    untrusted_read: bool = False
    tainted: bool = False  # the plan being run was made after something untrusted was read

    def value_of(self, step: int) -> float | str | None:
        if step == 0:
            return self.event_value
        found = [d for d in self.done if d.n == step]
        return found[-1].value if found else None

    def holds(self, when: dict[str, Any]) -> tuple[bool, str]:
        """Whether a step's condition holds, and why (what was compared)."""
        if "invalid" in when:
            return False, f"invalid condition: {when['invalid']}"
        have, op, want = self.value_of(int(when["step"])), when["op"], when["value"]
        if have is None:
            return False, f"step {when['step']} gave no value to compare"
        if isinstance(have, float) and isinstance(want, int | float):
            result = {">": have > want, "<": have < want, ">=": have >= want, "<=": have <= want,
                      "==": math.isclose(have, want), "!=": not math.isclose(have, want)}[op]
        elif op in ("==", "!="):
            result = (str(have).casefold() == str(want).casefold()) == (op == "==")
        else:
            return False, f"cannot compare {have!r} {op} {want!r}"
        return result, f"{have!r} {op} {want!r} is {'true' if result else 'false'}"

    async def run(self, n: int, step: Step) -> Done:
        tool = self.tools[step.tool]
        if step.when is not None:
            holds, why = self.holds(step.when)
            if not holds:
                done = Done(n, step.tool, step.args, tool.effect, "skipped", why)
                self.done.append(done)
                return done
        if any(d.tool == step.tool and d.args == step.args and d.outcome != "skipped" for d in self.done):
            raise Repeated(f"step {n} calls {step.tool} with the same arguments again")
        caller = replace(self.caller, untrusted=True) if self.tainted else self.caller
        started = time.monotonic()
        try:
            async with asyncio.timeout(TOOL_TIMEOUT_S):
                reply = await self.dispatcher.call(tool.command, step.args, caller)
        except TimeoutError:
            done = Done(n, step.tool, step.args, tool.effect, "timeout", f"no answer within {TOOL_TIMEOUT_S:g} s")
        except CommandError as exc:
            if exc.code == "approval_required":  # the exact call, as the dispatcher validated it
                request = self.dispatcher.parse(self.dispatcher.command(tool.command, caller), step.args)
                raise NeedsApproval(step.tool, tool.command, step.args, call_fingerprint(tool.command, request),
                                    exc.message) from None
            done = Done(n, step.tool, step.args, tool.effect, exc.code, exc.message[:300], phrase=exc.phrase)
        else:
            body = reply.model_dump(mode="json")
            outcome = str(body.get("outcome", "ok")) if isinstance(body, dict) else "ok"
            detail = str(body.get("reason", ""))[:300] if isinstance(body, dict) else ""
            done = Done(n, step.tool, step.args, tool.effect, "ok" if outcome == "confirmed" else outcome, detail,
                        typed_value(step.tool, body), body)
        done.ms = round((time.monotonic() - started) * 1000, 1)
        if step.tool in UNTRUSTED_READS:
            self.untrusted_read = True
        self.done.append(done)
        return done


class Repeated(Exception):
    """The plan called the same tool with the same arguments twice: the run ends."""


def _typed(value: Any) -> float | str | None:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value if WORD.match(value) else None
        return number if math.isfinite(number) else None
    return None


def typed_value(tool: str, body: Any) -> float | str | None:
    """The value a step gives conditions: an entity's state, a count; never free text."""
    if not isinstance(body, dict):
        return None
    if tool == "get_entity":
        return _typed((body.get("entity") or {}).get("state"))
    if tool in ("list_entities", "list_devices", "list_tasks", "list_schedules"):
        return float(len(body.get("items", [])))
    if tool == "search_memory":
        return float(len(body.get("hits", [])))
    if tool == "set_entity":
        return _typed(body.get("state"))
    return None


def event_value(given: Any) -> float | str | None:
    """Step 0: the value of the event that started the run (its ``value`` or ``state``), typed."""
    if isinstance(given, dict):
        for key in ("value", "state"):
            if key in given:
                return _typed(given[key])
        text = given.get("text")
        if isinstance(text, str):
            try:
                return event_value(json.loads(text))
            except ValueError:
                return None
    return _typed(given)
