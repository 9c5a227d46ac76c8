"""A command's tool face as a model sees it: the tool's name, its one line, and a compact JSON schema of
the request fields it fills, derived from the request model (so a tool never takes what the command
would refuse, and the schema cannot drift from the command).

Compact, because a small model's context is small: references are inlined, titles and defaults are
dropped, a field's description is kept to its first clause, and ``null`` is left out of optional
fields (a model that leaves one out gets the default). The engine's grammar (engine/tools.py)
forces a call to fit this schema; the dispatcher then validates it against the whole model.
"""

from __future__ import annotations

from typing import Any

from appliance.control.command import Command

KEEP = {"type", "enum", "const", "items", "properties", "required", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "additionalProperties",
        "anyOf", "description", "format"}
DESCRIPTION_CHARS = 80


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: _inline(schema, defs) for name, schema in value.items()}
        elif key == "description":
            out[key] = str(value).split(";")[0].split(". ")[0][:DESCRIPTION_CHARS]
        else:
            out[key] = _inline(value, defs)
    options = out.get("anyOf")
    if isinstance(options, list):  # X | None: the model leaves it out instead of writing null
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and isinstance(kept[0], dict):
            out.pop("anyOf")
            out = {**kept[0], **out}
        else:
            out["anyOf"] = kept
    return out


def tool_parameters(command: Command[Any, Any]) -> dict[str, Any]:
    """The JSON schema of the tool's arguments: an object of the tool's fields only."""
    assert command.tool is not None
    schema = command.request.model_json_schema()
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = command.tool.fields
    return {"type": "object",
            "properties": {name: _inline(properties[name], defs) for name in fields},
            "required": [name for name in fields if name in required],
            "additionalProperties": False}


def tool_spec(command: Command[Any, Any]) -> dict[str, Any]:
    """The tool in the OpenAI function form the engine takes (name, description, parameters)."""
    assert command.tool is not None
    return {"type": "function", "function": {"name": command.tool.name, "description": command.tool.description,
                                             "parameters": tool_parameters(command)}}
