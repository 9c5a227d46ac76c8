"""The plan: one model call, its reply forced by a grammar into steps over the offered tools.

The planner's context is trusted text only: what the tools are (their one lines and argument
names), the goal as a person wrote it, the time and the step numbers. The reply must fit
plan_schema: a list of at most MAX_STEPS steps, each a call of one offered tool with arguments of
that tool's schema, and optionally ``when``: run it only if an earlier step's value (step 0: the
event that started the run) compares with a value the plan fixes. The dispatcher validates each
call again against the whole request model when it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from appliance.loop.tools import OfferedTool

MAX_STEPS = 6
OPS = (">", "<", ">=", "<=", "==", "!=")
# The grammar does not need what the dispatcher checks anyway; patterns and long bounds only slow it.
DROPPED = ("pattern", "description", "maxLength", "minLength", "maxItems", "minItems")

SYSTEM = """You plan actions for an on-site appliance that watches and controls the site's devices.
Reply with JSON only: {"steps": [...]}. Each step calls one tool: {"tool": NAME, "args": {...}}.
Tools (only these):
TOOLS
Rules:
- Name devices and sensors with the user's own words in entity_id ("hall fan", "冷库温度"); the box finds them.
- To act only if a reading says so, read it first, then add "when": {"step": N, "op": ">", "value": X} to the act step.
- Questions need reading steps only; do not change anything unless the user asks for it.
- At most 6 steps. If the tools cannot do it, reply {"steps": []}.
Examples:
Goal: Turn on the hall fan
{"steps": [{"tool": "set_entity", "args": {"entity_id": "hall fan", "action": "turn_on"}}]}
Goal: If the freezer is above -15 °C, start the freezer defrost
{"steps": [{"tool": "get_entity", "args": {"entity_id": "freezer"}}, {"tool": "set_entity", "args": {"entity_id": \
"freezer defrost", "action": "turn_on"}, "when": {"step": 1, "op": ">", "value": -15}}]}
Goal: 客厅的灯开着吗?
{"steps": [{"tool": "get_entity", "args": {"entity_id": "客厅的灯"}}]}
Goal: Tell the staff the dock door is stuck
{"steps": [{"tool": "notify", "args": {"text": "The dock door is stuck", "kind": "alert"}}]}"""


@dataclass(frozen=True)
class Step:
    tool: str
    args: dict[str, Any]
    when: dict[str, Any] | None = None


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)


def _compact(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _compact(value) for key, value in schema.items() if key not in DROPPED}
    if isinstance(schema, list):
        return [_compact(item) for item in schema]
    return schema


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(str(value) for value in schema["enum"])
    return str(schema.get("type", "value"))


def signature(tool: OfferedTool) -> str:
    """``set_entity(entity_id, action, args?): Change a device...``: what the planner reads of a tool."""
    properties = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    args = ", ".join(f"{name}{'' if name in required else '?'}: {_kind(schema)}" for name, schema in properties.items())
    return f"- {tool.name}({args}): {tool.description}"


def system_prompt(tools: list[OfferedTool]) -> str:
    return SYSTEM.replace("TOOLS", "\n".join(signature(tool) for tool in tools))


def user_prompt(goal: str, now: str, event: bool) -> str:
    started = "\nStep 0 is the event that started this run (its value can be used in when)." if event else ""
    return f"Time now: {now}.{started}\nGoal: {goal}"


def plan_schema(tools: list[OfferedTool]) -> dict[str, Any]:
    when = {"type": "object", "properties": {
        "step": {"type": "integer", "minimum": 0, "maximum": MAX_STEPS},
        "op": {"enum": list(OPS)},
        "value": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
        "required": ["step", "op", "value"], "additionalProperties": False}
    calls = [{"type": "object", "properties": {"tool": {"const": tool.name}, "args": _compact(tool.parameters),
                                                "when": when},
              "required": ["tool", "args"], "additionalProperties": False} for tool in tools]
    return {"type": "object", "properties": {"steps": {"type": "array", "items": {"anyOf": calls},
                                                       "maxItems": MAX_STEPS}},
            "required": ["steps"], "additionalProperties": False}


def read_plan(parsed: Any, tools: list[OfferedTool]) -> Plan:
    """The plan from the grammar-checked reply (checked again: a tool not offered never passes)."""
    names = {tool.name for tool in tools}
    if not isinstance(parsed, dict) or not isinstance(parsed.get("steps"), list):
        raise ValueError("the plan is not {\"steps\": [...]}")
    steps = []
    for n, raw in enumerate(parsed["steps"][:MAX_STEPS], 1):
        if not isinstance(raw, dict) or raw.get("tool") not in names or not isinstance(raw.get("args"), dict):
            raise ValueError(f"step {n} is not a call of an offered tool")
        when = raw.get("when")
        if when is not None and (not isinstance(when, dict) or not isinstance(when.get("step"), int)
                                 or not 0 <= when["step"] < n or when.get("op") not in OPS):
            # Kept, never run as if unconditional: the executor skips it and the run plans again.
            when = {"invalid": f"its condition names no earlier step ({json.dumps(when)[:80]})"}
        steps.append(Step(raw["tool"], dict(raw["args"]), when))
    return Plan(steps)


def describe(plan: Plan) -> str:
    return json.dumps([{"tool": s.tool, "args": s.args, **({"when": s.when} if s.when else {})} for s in plan.steps],
                      ensure_ascii=False)[:4000]
