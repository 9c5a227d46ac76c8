"""Tool calls: the grammar that forces one, and the parser that reads them back from a reply.

Qwen2.5's template asks for ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; small
models also answer with a fenced JSON block or bare JSON, so all three are read. A call must name
a tool the request offered and its arguments must satisfy that tool's JSON schema: otherwise it
is an error (RequestRefused), never passed on to be executed. Inside ``<tool_call>`` tags
anything but a valid call is an error; a fenced block or bare JSON counts as a call only when
it is shaped like one (an object with "name" and "arguments"), so a model that answers with
JSON that is not a call is not misread.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from appliance.engine.errors import RequestRefused
from appliance.protocol.engine import Tool, ToolCall

TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.S)
FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?```", re.S)
MAX_CALLS = 16


def call_grammar(tools: list[Tool], schema_grammar: Any) -> str:
    """GBNF for exactly one ``<tool_call>`` block calling one of ``tools`` with valid arguments."""
    shapes = [{"type": "object", "properties": {"name": {"const": tool.function.name},
                                                "arguments": tool.function.parameters},
               "required": ["name", "arguments"], "additionalProperties": False} for tool in tools]
    grammar: str = schema_grammar(shapes[0] if len(shapes) == 1 else {"anyOf": shapes})
    grammar = re.sub(r"^root ::=", "call ::=", grammar, count=1, flags=re.M)
    return grammar + '\nroot ::= "<tool_call>\\n" call "\\n</tool_call>"\n'


def parse_tool_calls(text: str, tools: list[Tool]) -> tuple[list[ToolCall], str]:
    """The calls in ``text`` and what is left of it as an answer; RequestRefused for a bad call."""
    offered = {tool.function.name: tool for tool in tools}
    if tagged := TAGGED.findall(text):
        return [_call(body, offered) for body in tagged[:MAX_CALLS]], TAGGED.sub("", text).strip()
    calls: list[ToolCall] = []
    rest = text
    for block in FENCED.finditer(text):
        if found := _shaped_calls(block.group(1)):
            calls += [_call(item, offered) for item in found]
            rest = rest.replace(block.group(0), "")
    if not calls and text.strip()[:1] in ("{", "[") and (found := _shaped_calls(text.strip())):
        calls, rest = [_call(item, offered) for item in found], ""
    return calls[:MAX_CALLS], rest.strip()


def _shaped_calls(body: str) -> list[Any]:
    """The call-shaped objects in a JSON text (one, or a list of them); none when it is other JSON."""
    try:
        value = json.loads(body)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    shaped = [item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)
              and ("arguments" in item or "parameters" in item)]
    return shaped if len(shaped) == len(items) else []


def _call(body: Any, offered: dict[str, Tool]) -> ToolCall:
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise RequestRefused(f"tool call: not JSON ({exc}): {body[:200]!r}") from None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise RequestRefused(f"tool call: expected {{\"name\": ..., \"arguments\": {{...}}}}, got {str(body)[:200]}")
    name = body["name"]
    if name not in offered:
        raise RequestRefused(f"tool call: {name[:64]!r} is not one of the tools offered ({', '.join(offered)})")
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's form: the arguments as a JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise RequestRefused(f"tool call {name}: arguments are not JSON: {arguments[:200]!r}") from None
    if not isinstance(arguments, dict):
        raise RequestRefused(f"tool call {name}: arguments must be an object, got {type(arguments).__name__}")
    try:
        jsonschema.validate(arguments, offered[name].function.parameters)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "arguments"
        raise RequestRefused(f"tool call {name}: {where}: {exc.message}") from None
    except jsonschema.SchemaError as exc:
        raise RequestRefused(f"tools: {name}'s parameters are not a valid JSON schema: {exc.message}") from None
    return ToolCall(name=name, arguments=arguments)
