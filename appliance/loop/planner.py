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
# Bounds the grammar would spell out character by character (a text of 4,000) are left to the
# dispatcher, which checks every call against the whole request model anyway.
BOUNDS = ("maxLength", "minLength", "maxItems", "minItems")
LONGEST_BOUND = 64
# Escapes that match no quote, backslash or control character inside a JSON string.
SAFE_ESCAPES = frozenset("dw.-_+*?()[]{}|^$/")
CONDITIONAL = ("if ", "if,", "unless", "only when", "when ", "whenever", "in case",
               "如果", "假如", "要是", "若", "倘若", "的话")

SYSTEM = """You plan actions for an on-site appliance that watches and controls the site's devices.
Reply with JSON only: {"steps": [...]}. Each step calls one tool: {"tool": NAME, "args": {...}}.
Tools (only these):
TOOLS
Rules:
- Name devices and sensors with the user's own words in entity_id ("hall fan", "冷库温度"); the box finds them.
- To act only if a reading says so, read it first, then add "when": {"step": N, "op": ">", "value": X} to the act step.
- Add "when" only if the user said if, unless or only when. Questions need reading steps only.
- Where things are, what someone said, dates, procedures: search_memory. Repeating things: create_schedule.
- Texts you write (notify, remember, alerts) are in the user's language.
- 打开/开启 is turn_on, 关闭/关掉/关上 turn_off; but blinds, curtains (窗帘), doors and valves take open
  and close, and a percentage is set_value.
- At most 6 steps. If the tools cannot do it, reply {"steps": []}.
Examples:
Goal: Turn on the hall fan
{"steps": [{"tool": "set_entity", "args": {"entity_id": "hall fan", "action": "turn_on"}}]}
Goal: If the freezer is above -15 °C, start the freezer defrost
{"steps": [{"tool": "get_entity", "args": {"entity_id": "freezer"}}, {"tool": "set_entity", "args": {"entity_id": \
"freezer defrost", "action": "turn_on"}, "when": {"step": 1, "op": ">", "value": -15}}]}
Goal: 客厅的灯开着吗?
{"steps": [{"tool": "get_entity", "args": {"entity_id": "客厅的灯"}}]}
Goal: 打开仓库的灯,然后告诉工作人员
{"steps": [{"tool": "set_entity", "args": {"entity_id": "仓库的灯", "action": "turn_on"}}, {"tool": "notify", \
"args": {"text": "仓库的灯已打开", "kind": "alert"}}]}
Goal: Set the office heating to 21.5 degrees and the awning to 30 %
{"steps": [{"tool": "set_entity", "args": {"entity_id": "office heating", "action": "set_temperature", "args": \
{"temperature": 21.5}}}, {"tool": "set_entity", "args": {"entity_id": "awning", "action": "set_value", "args": \
{"value": 30}}}]}
Goal: Where is the ladder?
{"steps": [{"tool": "search_memory", "args": {"q": "ladder"}}]}
Goal: Every weekday at 7:00 remind the staff to water the plants
{"steps": [{"tool": "create_schedule", "args": {"name": "water_plants", "trigger": "cron:0 7 * * 1-5", "action": \
"send_alert", "args": {"message": "Water the plants"}}}]}
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


def _grammar_pattern(pattern: Any) -> bool:
    """Whether a pattern may go into the grammar as it is. llama.cpp's converter takes only patterns
    anchored at both ends, and puts the pattern's characters between the string's quotes as they
    are: a negated class ("[^\\x00-\\x1f]"), a dot or an \\S would let the string swallow its own
    closing quote and the rest of the plan. So only short patterns of listed characters are kept;
    the dispatcher checks every call against the whole model anyway."""
    if not (isinstance(pattern, str) and len(pattern) <= 80 and pattern.startswith("^") and pattern.endswith("$")):
        return False
    body, i = pattern[1:-1], 0
    while i < len(body):
        char = body[i]
        if char == "[":
            end = body.find("]", i + 2)
            if end < 0 or body[i + 1] == "^" or '"' in body[i:end] or "\\" in body[i:end]:
                return False
            i = end + 1
        elif char in '."' or (char == "\\" and body[i + 1:i + 2] not in SAFE_ESCAPES):
            return False
        else:
            i += 2 if char == "\\" else 1
    return True


# Any JSON value, spelled out: llama.cpp's converter reads an empty schema ({}, what a JsonValue
# field gives) as "an object", which would leave {"temperature": 21.5} impossible to write.
ANY_VALUE = {"anyOf": [{"type": kind} for kind in ("number", "string", "boolean", "null", "object", "array")]}


def _compact(schema: Any) -> Any:
    """A JSON schema as the grammar needs it (every value here is a schema, never a keyword's data)."""
    if schema == {} or schema is True:
        return ANY_VALUE
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description" or (key in BOUNDS and isinstance(value, int) and value > LONGEST_BOUND) or (
                key == "pattern" and not _grammar_pattern(value)):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            kept[key] = {name: _compact(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            kept[key] = [_compact(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            kept[key] = _compact(value)
        else:
            kept[key] = value
    return kept


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


def conditional(goal: str) -> bool:
    """Whether the person asked for something to happen only if something holds."""
    text = f" {goal.lower()} "
    return any(word in text for word in CONDITIONAL)


def read_plan(parsed: Any, tools: list[OfferedTool], goal: str = "if") -> Plan:
    """The plan from the grammar-checked reply (checked again: a tool not offered never passes). A goal
    that asks for nothing conditional has no conditions: a small model adds them out of habit."""
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
        steps.append(Step(raw["tool"], dict(raw["args"]), when if conditional(goal) else None))
    return Plan(steps)


def describe(plan: Plan) -> str:
    return json.dumps([{"tool": s.tool, "args": s.args, **({"when": s.when} if s.when else {})} for s in plan.steps],
                      ensure_ascii=False)[:4000]
