"""The OpenAPI 3.1 description of REST, generated from the command table and its pydantic models.

The same models validate requests, so the spec cannot drift from what the server accepts.
Served at /api/v1/openapi.json; /api/docs renders it with a page served from the box.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from appliance import __version__
from appliance.control.caller import Permission
from appliance.control.command import Command, CommandTable, HttpRoute, OwnerRule, OwnRow
from appliance.control.errors import STATUS

REF = "#/components/schemas/{model}"
PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]+)?\}")  # aiohttp's {name} or {name:regex}
STATIC = Path(__file__).parent / "static"
PHRASE_SCHEMA = {
    "type": "object", "required": ["code", "args"],
    "description": "the message by code (appliance/phrases), for a client to say in its reader's language",
    "properties": {"code": {"type": "string"}, "args": {"type": "object"}},
}
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": sorted(STATUS)}, "message": {"type": "string"},
        "field": {"type": "string"}, "retry_after": {"type": "number"}, "phrase": PHRASE_SCHEMA,
        "problems": {"type": "array", "description": "every field at fault in an invalid request",
                     "items": {"type": "object", "required": ["field", "message"], "properties": {
                         "field": {"type": ["string", "null"]}, "message": {"type": "string"},
                         "phrase": PHRASE_SCHEMA}}}}}},
}
CONVENTIONS = """Every route needs `Authorization: Bearer <token>` except those marked public. A token comes
from `POST /api/v1/auth/login` (15 minutes, with a refresh token) or from an admin (`POST
/api/v1/tokens`, a named device or app token). Tokens never go in a URL.

Errors are `{"error": {"code", "message", "field", "retry_after", "problems", "phrase"}}` with the
matching status; an invalid request lists every field at fault in `problems`. `message` is English;
`phrase` (code and args), where present, is the same message by code, as /static/phrases/en.json and
zh.json word it.

Lists take `limit` (default 50) and `cursor`, and answer `next_cursor` (null on the last page):
pass it back as `cursor` for the next page. Filters are query parameters named after the fields
they filter; those that may repeat (kind, source, tag) match any of the values given."""


def _owner_note(rule: OwnerRule) -> str:
    if isinstance(rule, OwnRow):
        return (f" Owner rule: on one's own {rule.resource} it needs {rule.own.value}; on anyone else's "
                f"{rule.others.value} (else 403).")
    return f" Owner rule: below {rule.others.value}, other people's {rule.resource}s are reduced to their state."


def _models(command: Command[Any, Any]) -> list[type[BaseModel]]:
    response = command.response
    if isinstance(response, type) and issubclass(response, BaseModel):
        return [response]
    return [m for m in typing.get_args(response) if isinstance(m, type) and issubclass(m, BaseModel)]


def _ref(model: type[BaseModel], names: dict[tuple[type[BaseModel], str], str], mode: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=names[(model, mode)])}


def _response_schema(command: Command[Any, Any], names: dict[Any, str]) -> dict[str, Any]:
    models = _models(command)
    refs = [_ref(m, names, "serialization") for m in models]
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _without(schema: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """The request schema less the fields the path supplies."""
    trimmed = dict(schema)
    trimmed["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k not in fields}
    trimmed["required"] = [k for k in schema.get("required", []) if k not in fields]
    if not trimmed["required"]:
        del trimmed["required"]
    return trimmed


def _multipart(body: dict[str, Any], text_field: str, name_field: str) -> dict[str, Any]:
    """An upload form: the file (UTF-8 text) fills two fields; a list field is one comma-separated part."""
    properties: dict[str, Any] = {"file": {**body["properties"][text_field], "contentMediaType": "text/plain",
                                           "description": f"the document, UTF-8 text; fills {text_field} and, by "
                                                          f"its file name, {name_field}"}}
    for name, schema in body["properties"].items():
        if name in (text_field, name_field):
            continue
        if schema.get("type") == "array":
            item = schema.get("items", {}).get("pattern", ".+").strip("^$")
            schema = {"type": "string", "pattern": f"^({item})?(,{item})*$", "description": "comma-separated"}
        properties[name] = schema
    return {"schema": {"type": "object", "required": ["file"], "properties": properties, "additionalProperties": False},
            "encoding": {"file": {"contentType": "text/plain, text/markdown"}}}


def _operation(command: Command[Any, Any], route: HttpRoute, names: dict[Any, str],
               defs: dict[str, Any]) -> dict[str, Any]:
    path_fields = set(PATH_PARAM.findall(route.path))
    request_schema = command.request.model_json_schema(ref_template=REF)
    properties = request_schema.get("properties", {})
    required = set(request_schema.get("required", []))
    parameters = [{"name": name, "in": "path", "required": True, "schema": properties.get(name, {"type": "string"})}
                  for name in sorted(path_fields)]
    operation: dict[str, Any] = {
        "operationId": f"{command.name.replace('.', '_')}_{route.method.lower()}",
        "summary": command.summary,
        "description": f"Command `{command.name}`; needs the **{command.permission.value}** role"
                       + (" (anyone)." if command.permission is Permission.PUBLIC else " or higher.")
                       + f" Effect: {command.effect.value}."
                       + (" Recorded in the audit log." if command.mutating else "")
                       + (_owner_note(command.owner) if command.owner is not None else ""),
        "tags": [command.tags[0] if command.tags else command.name.split(".")[0]],
        "x-command": command.name, "x-permission": command.permission.value, "x-effect": command.effect.value,
    }
    if route.method in ("GET", "DELETE") or route.body_file is not None:
        for name, schema in properties.items():
            if name in path_fields or name == route.body_file:
                continue
            parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
            annotation = command.request.model_fields[name].annotation
            if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
                parameter.update(style="form", explode=True)
            parameters.append(parameter)
    if route.body_file is not None:  # the file itself is the body; the other fields are query parameters
        operation["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    elif route.method not in ("GET", "DELETE"):
        body = _without(defs[names[(command.request, "validation")]], path_fields)
        content: dict[str, Any] = {"application/json": {"schema": body}}
        if route.form:
            content["application/x-www-form-urlencoded"] = {"schema": body}
        if route.upload is not None:
            content["multipart/form-data"] = _multipart(body, *route.upload)
        operation["requestBody"] = {"required": bool(body.get("required")), "content": content}
    if parameters:
        operation["parameters"] = parameters
    if command.permission is not Permission.PUBLIC:
        operation["security"] = [{"bearer": []}]
    else:
        operation["security"] = [{}, {"bearer": []}]
    if route.render == "prometheus":
        ok: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
    elif command.streaming:
        ok = {"application/x-ndjson": {"schema": _response_schema(command, names),
                                       "x-description": "one JSON object per line"}}
    else:
        ok = {"application/json": {"schema": _response_schema(command, names)}}
    error = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    operation["responses"] = {str(route.status): {"description": "done", "content": ok}, **{
        str(status): {"description": text, "content": error} for status, text in (
            (400, "bad request: the message names the field"), (401, "no token, or a token that is not valid"),
            (403, "the role does not allow this"), (404, "no such thing"), (409, "conflicts with what exists"),
            (413, "body too large"), (429, "rate limited or busy: see Retry-After"),
            (500, "internal error"), (503, "a service behind the api is down or cannot do this now"),
            (504, "a service behind the api did not answer in time"))}}
    return operation


def build_spec(table: CommandTable) -> dict[str, Any]:
    commands = [c for c in table if "rest" in c.surfaces and c.http]
    wanted: list[tuple[type[BaseModel], Any]] = []
    for command in commands:
        wanted.append((command.request, "validation"))
        wanted += [(m, "serialization") for m in _models(command)]
    keys, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})
    names = {key: value["$ref"].rsplit("/", 1)[1] for key, value in keys.items()}
    defs["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for command in commands:
        for route in command.http:
            path = PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
            paths.setdefault(path, {})[route.method.lower()] = _operation(command, route, names, defs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Appliance control plane", "version": __version__, "description": CONVENTIONS},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": defs, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "oauth2": {"type": "oauth2", "flows": {"password": {"tokenUrl": "/api/v1/auth/token", "scopes": {}}}}}},
    }


def add_spec_routes(app: web.Application, table: CommandTable) -> None:
    spec = json.dumps(build_spec(table)).encode()

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    async def docs(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "docs.html")

    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/docs", docs)

