"""REST: the command table served as HTTP routes. An adapter only: no operation is written here.

For each command with an `HttpRoute`, a request becomes the command's payload: ``{name}``
segments of the path, then the query string (GET, DELETE) or the JSON body (POST, PUT, PATCH).
Query parameters that the request model types as lists may repeat; any other may not; unknown
ones are refused by name, and a token never travels in a URL. The dispatcher does the rest.
A streaming command answers newline-delimited JSON, one object per item.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import types
import typing
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from appliance.control.caller import Caller
from appliance.control.command import Command, HttpRoute
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.system import MetricsReport, prometheus

CALLER_KEY = web.RequestKey("caller", Caller)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
UPLOAD_DIR_KEY = web.AppKey("upload_dir", Path)  # where body_file routes store what they receive
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_METHODS = {"POST", "PUT", "PATCH"}


def error_response(error: CommandError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(error.retry_after)))} if error.retry_after is not None else None
    if error.code == "unauthorized":
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return web.json_response({"error": error.as_dict()}, status=error.status, headers=headers)


def _is_list(field: FieldInfo) -> bool:
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(typing.get_origin(arg) is list for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def query_payload(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    query = request.query
    if "token" in query or "access_token" in query:
        raise CommandError("bad_request", "tokens never go in the URL; send 'Authorization: Bearer <token>'",
                           field="token")
    unknown = sorted(set(query) - set(model.model_fields))
    if unknown:
        raise CommandError("bad_request", f"unknown query parameter(s) {unknown}; known: {sorted(model.model_fields)}",
                           field=unknown[0])
    payload: dict[str, Any] = {}
    for name in query:
        values = query.getall(name)
        if _is_list(model.model_fields[name]):
            payload[name] = values
        elif len(values) > 1:
            raise CommandError("bad_request", f"query parameter {name!r} given {len(values)} times; give it once",
                               field=name)
        else:
            payload[name] = values[0]
    return payload


def _too_large(limit: int, route: HttpRoute) -> CommandError:
    where = "this route's limit" if route.max_body_bytes else "api.max_body_bytes"
    return CommandError("too_large", f"body exceeds {limit} bytes ({where})")


async def read_limited(request: web.Request, limit: int, route: HttpRoute) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, route)
    try:
        raw = await request.content.read(limit + 1)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit, route) from None
    if len(raw) > limit:
        raise _too_large(limit, route)
    return raw


async def body_payload(request: web.Request, route: HttpRoute, model: type[BaseModel]) -> tuple[dict[str, Any], bool]:
    """The JSON object of the body (or a form, or a multipart upload, where the route takes one), and
    whether it was JSON (then its types are taken strictly: ``false`` is not a number)."""
    limit = route.max_body_bytes or request.app[MAX_BODY_KEY]
    kind = request.content_type
    if route.upload is not None and kind == "multipart/form-data":
        return await _upload(request, limit, route, model), False
    raw = await read_limited(request, limit, route)
    if route.form and kind == "application/x-www-form-urlencoded":
        try:
            form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise CommandError("bad_request", "body: a form must be UTF-8") from None
        return {key: values[-1] for key, values in form.items()}, False
    if not raw.strip():
        return {}, True
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("bad_request", f"body: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CommandError("bad_request", f"body: expected a JSON object, got {type(data).__name__}")
    return data, True


async def _upload(request: web.Request, limit: int, route: HttpRoute, model: type[BaseModel]) -> dict[str, Any]:
    """A multipart form: its file part's text and name go to the route's two fields, other parts as they are."""
    assert route.upload is not None
    text_field, name_field = route.upload
    list_fields = {name for name, info in model.model_fields.items() if _is_list(info)}
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, route)
    try:
        return await _parts(request, limit, route, text_field, name_field, list_fields)
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:  # a broken multipart body
        raise CommandError("bad_request", f"body: not a well-formed multipart form ({exc})") from None


async def _parts(request: web.Request, limit: int, route: HttpRoute, text_field: str, name_field: str,
                 list_fields: set[str]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise CommandError("bad_request", "body: nested multipart is not taken")
        data = await part.read(decode=True)
        total += len(data)
        if total > limit:
            raise _too_large(limit, route)
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise CommandError("bad_request", f"{part.name or 'file'}: not UTF-8 text (invalid byte at offset "
                                              f"{exc.start})", field=text_field) from None
        if part.name == "file" or part.filename is not None:
            payload[text_field] = text
            # Without a file name, the text's own digest names it (re-uploading it replaces it).
            payload.setdefault(name_field, part.filename or f"upload:{hashlib.sha256(data).hexdigest()[:16]}")
        elif part.name:
            # A list field travels as one comma-separated part (tags=dock,manuals).
            payload[part.name] = [v for v in text.split(",") if v] if part.name in list_fields else text
    return payload


def _render(route: HttpRoute, reply: BaseModel) -> web.Response:
    if route.render == "prometheus" and isinstance(reply, MetricsReport):
        return web.Response(text=prometheus(reply), content_type="text/plain", charset="utf-8")
    return web.Response(body=reply.model_dump_json(), status=route.status, content_type="application/json")


async def store_body(request: web.Request, route: HttpRoute) -> Path:
    """The raw body into a new file of the upload folder, at most the route's limit; its path.
    A body cut short or too long leaves no file behind."""
    limit = route.max_body_bytes or request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, route)
    folder = request.app[UPLOAD_DIR_KEY]
    await asyncio.to_thread(folder.mkdir, mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(8)}.upload"
    written = 0
    try:
        with path.open("xb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise _too_large(limit, route)
                await asyncio.to_thread(out.write, chunk)
        if request.content_length is not None and written != request.content_length:
            raise CommandError("bad_request", f"body: {written:,} of {request.content_length:,} bytes arrived")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _path_value(model: type[BaseModel], name: str, value: str) -> Any:
    """A path segment is text; an integer field takes its digits as a number, also in a strict JSON body."""
    field = model.model_fields.get(name)
    return int(value) if field is not None and field.annotation is int and value.isdigit() else value


def command_handler(dispatcher: Dispatcher, command: Command[Any, Any], route: HttpRoute) -> Handler:
    reads_body = route.method in BODY_METHODS
    where = "body" if reads_body else "query"

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.body_file is not None:
            payload, strict = query_payload(request, command.request), False
            # The role first: nobody without it gets to fill the disk.
            dispatcher.authorize(command, request[CALLER_KEY])
            payload[route.body_file] = str(await store_body(request, route))
        else:
            payload, strict = (await body_payload(request, route, command.request) if reads_body
                               else (query_payload(request, command.request), False))
        for name, value in request.match_info.items():
            if name in payload and payload[name] != value:
                raise CommandError("bad_request", f"{name} is given in the path and differs in the {where}",
                                   field=name)
            payload[name] = _path_value(command.request, name, value)
        caller = request[CALLER_KEY]
        if not command.streaming:
            return _render(route, await dispatcher.call(command.name, payload, caller, where=where, strict=strict))
        return await stream_ndjson(request, dispatcher.stream(command.name, payload, caller, where=where,
                                                              strict=strict))

    return handle


async def stream_ndjson(request: web.Request, items: typing.AsyncIterator[BaseModel]) -> web.StreamResponse:
    """Items as NDJSON. The first is awaited before any header, so an early refusal keeps its status."""
    stream = typing.cast(typing.AsyncGenerator[BaseModel, None], items)
    try:
        first = await anext(stream, None)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(first.model_dump_json().encode() + b"\n")
                async for item in stream:
                    await response.write(item.model_dump_json().encode() + b"\n")
        except CommandError as exc:
            await response.write(json.dumps({"error": exc.as_dict()}).encode() + b"\n")
        except ConnectionError:
            return response  # the client left; closing the stream below cancels the work
        await response.write_eof()
        return response
    finally:
        await stream.aclose()


def add_command_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    for command in dispatcher.table:
        if "rest" not in command.surfaces:
            continue
        for route in command.http:
            app.router.add_route(route.method, route.path, command_handler(dispatcher, command, route))
