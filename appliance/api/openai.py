"""The OpenAI-compatible API: POST /v1/chat/completions (SSE streaming or not), POST /v1/embeddings,
GET /v1/models, so programs on site that speak OpenAI's API work against the box unchanged.

A thin adapter: each request becomes the llm.generate or llm.embed command (control/llm.py) with
the caller from the bearer token, so roles, audit and error mapping are the dispatcher's. Only
the shapes are OpenAI's, errors included: ``{"error": {"message", "type", "param", "code"}}``.
``response_format`` json_object or json_schema goes to the engine's grammar; ``tools`` to the
model's own template, and a tool_choice that demands a call to a grammar. With tools offered,
a streamed reply's text is held back until the end (a call is only known once it is complete),
then sent as one delta, or as tool_calls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.api.rest import CALLER_KEY, MAX_BODY_KEY, read_limited
from appliance.control.admin import Models
from appliance.control.caller import Caller
from appliance.control.command import HttpRoute
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.protocol.engine import EmbedResponse, GenerateChunk

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields that do not apply here


class ContentPart(_Lenient):
    type: Literal["text"]
    text: str


class FunctionCall(_Lenient):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Lenient):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Lenient):
    model: str = Field("", max_length=128)
    messages: list[MessageIn] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class EmbeddingRequest(_Lenient):
    input: str | list[str]
    model: str = Field("", max_length=128)
    encoding_format: Literal["float", "base64"] = "float"


def openai_error(exc: CommandError) -> web.Response:
    """OpenAI's error shape over the one vocabulary: ``problems`` (every field at fault) rides along."""
    error: dict[str, Any] = {"message": exc.message, "type": ERROR_TYPES.get(exc.status, "api_error"),
                             "param": exc.field, "code": exc.code}
    if exc.problems:
        error["problems"] = exc.problems
    body = {"error": error}
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return web.json_response(body, status=exc.status, headers=headers)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    raw = await read_limited(request, request.app[MAX_BODY_KEY], HttpRoute("POST", request.path))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CommandError("bad_request", f"the body is not JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandError.of(exc) from None


def generate_payload(req: ChatCompletionRequest) -> dict[str, Any]:
    """The llm.generate request for an OpenAI chat completion."""
    messages = []
    for message in req.messages:
        content = message.content if isinstance(message.content, str) else "".join(
            part.text for part in message.content or [])
        calls = None
        if message.tool_calls:
            try:
                calls = [{"name": c.function.name, "arguments": json.loads(c.function.arguments or "{}")}
                         for c in message.tool_calls]
            except ValueError:
                raise CommandError("bad_request", "messages: a tool call's arguments are not JSON",
                                   field="messages") from None
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": content, **({"tool_calls": calls} if calls else {})})
    payload: dict[str, Any] = {"messages": messages, "temperature": req.temperature, "top_p": req.top_p,
                               "max_tokens": req.max_completion_tokens or req.max_tokens or 512, "seed": req.seed,
                               "stop": [req.stop] if isinstance(req.stop, str) else req.stop or []}
    if req.response_format is not None and req.response_format.type != "text":
        schema = (req.response_format.json_schema or {}).get("schema") if req.response_format.type == "json_schema" \
            else {"type": "object"}
        if not isinstance(schema, dict):
            raise CommandError("bad_request", "response_format.json_schema.schema: a JSON schema is required",
                               field="response_format")
        payload["json_schema"] = schema
    if req.tools:
        # OpenAI's function objects may carry more (strict, ...): the engine takes the three it uses.
        functions = [tool.get("function") for tool in req.tools]
        if not all(isinstance(function, dict) for function in functions):
            raise CommandError("bad_request", "tools: each is {\"type\": \"function\", \"function\": {...}}",
                               field="tools")
        payload["tools"] = [{"type": "function", "function": {
            key: value for key, value in function.items() if key in ("name", "description", "parameters")}}
            for function in functions if isinstance(function, dict)]
        choice = req.tool_choice
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name")
        payload["tool_choice"] = choice or "auto"
    return payload


def _calls(chunk: GenerateChunk) -> list[dict[str, Any]]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in chunk.tool_calls or []]


def _finish(chunk: GenerateChunk) -> str:
    return "tool_calls" if chunk.tool_calls else "length" if chunk.finish_reason == "length" else "stop"


def _usage(chunk: GenerateChunk) -> dict[str, int]:
    return {"prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens}


def add_openai_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    async def model_name(caller: Caller) -> str:
        """The default chat model's name, as replies name the model."""
        with contextlib.suppress(CommandError):
            listed = await dispatcher.call("models.list", {}, caller)
            assert isinstance(listed, Models)
            return next((row.name for row in listed.models if row.default == "chat"), "appliance-chat")
        return "appliance-chat"

    async def completions(request: web.Request) -> web.StreamResponse:
        caller = request[CALLER_KEY]
        req = await _body(request, ChatCompletionRequest)
        payload = generate_payload(req)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = req.model or await model_name(caller)
        stream = dispatcher.stream("llm.generate", payload, caller)
        if not req.stream:
            text, last = [], None
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    assert isinstance(chunk, GenerateChunk)
                    text.append(chunk.text)
                    last = chunk
            assert last is not None
            calls = _calls(last)
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(text)}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({"id": ident, "object": "chat.completion", "created": created, "model": model,
                                      "choices": [{"index": 0, "message": message, "finish_reason": _finish(last)}],
                                      "usage": _usage(last)})
        return await _sse(request, stream, ident, created, model, hold=bool(req.tools),
                          usage=bool((req.stream_options or {}).get("include_usage")))

    async def embeddings(request: web.Request) -> web.Response:
        req = await _body(request, EmbeddingRequest)
        texts = [req.input] if isinstance(req.input, str) else req.input
        reply = await dispatcher.call("llm.embed", {"texts": texts}, request[CALLER_KEY])
        assert isinstance(reply, EmbedResponse)
        data = [{"object": "embedding", "index": i, "embedding": _encode(vector, req.encoding_format)}
                for i, vector in enumerate(reply.vectors)]
        return web.json_response({"object": "list", "data": data, "model": req.model or "embedding",
                                  "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    async def models(request: web.Request) -> web.Response:
        listed = await dispatcher.call("models.list", {}, request[CALLER_KEY])
        assert isinstance(listed, Models)
        return web.json_response({"object": "list", "data": [
            {"id": row.name, "object": "model", "created": 0, "owned_by": "appliance"}
            for row in listed.models if row.kind in ("chat", "embedding")]})

    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def _sse(request: web.Request, stream: Any, ident: str, created: int, model: str, *, hold: bool,
               usage: bool) -> web.StreamResponse:
    """Server-sent events in OpenAI's chunk form, ending with ``data: [DONE]``. An error before the
    first token is an ordinary error response; one after it is an error event, then the end."""
    response: web.StreamResponse | None = None
    held: list[str] = []

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    async def send(data: bytes) -> None:
        nonlocal response
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await response.prepare(request)
            await response.write(chunk({"role": "assistant", "content": ""}))
        await response.write(data)

    try:
        async with contextlib.aclosing(stream) as chunks:
            async for item in chunks:
                assert isinstance(item, GenerateChunk)
                if not item.done:
                    if hold:
                        held.append(item.text)
                    elif item.text:
                        await send(chunk({"content": item.text}))
                    continue
                calls = _calls(item)
                if calls:
                    await send(chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}))
                elif held:
                    await send(chunk({"content": "".join(held)}))
                await send(chunk({}, _finish(item)))
                if usage:
                    await send(b"data: " + json.dumps({"id": ident, "object": "chat.completion.chunk",
                                                       "created": created, "model": model, "choices": [],
                                                       "usage": _usage(item)}).encode() + b"\n\n")
    except CommandError as exc:
        if response is None:
            raise
        error = {"error": {"message": exc.message, "type": ERROR_TYPES.get(exc.status, "api_error"),
                           "param": exc.field, "code": exc.code}}
        await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
    await send(b"data: [DONE]\n\n")
    assert response is not None
    await response.write_eof()
    return response
