"""The OpenAI-compatible API, driven by the official `openai` Python client (pinned): the client is the
oracle of the shapes, not our own parser. A real engine behind the real app: the tiny random model
where only the plumbing matters, the real Qwen2.5-Coder-0.5B for structured output and tools."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import openai
import pytest

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from appliance.protocol.engine import ENGINE_EMBED, EmbedRequest
from tests.helpers import api_client, bearer, update_config

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]
SWITCH = {"type": "object", "properties": {"device": {"type": "string", "enum": ["door", "fan", "light"]},
                                           "on": {"type": "boolean"}}, "required": ["device", "on"],
          "additionalProperties": False}
LIGHT = {"type": "function", "function": {"name": "set_light", "description": "Switch a room's light on or off.",
                                          "parameters": {"type": "object", "properties": {
                                              "room": {"type": "string"}, "on": {"type": "boolean"}},
                                              "required": ["room", "on"]}}}


async def openai_client(config_file: Path, peers: Peers, role: Role = Role.VIEWER
                        ) -> AsyncIterator[tuple[openai.AsyncOpenAI, Peers]]:
    async with api_client(load_config(config_file), peers) as (client, dispatcher):
        token = bearer(dispatcher, role)["Authorization"][7:]
        oai = openai.AsyncOpenAI(api_key=token, base_url=str(client.make_url("/v1")), max_retries=0, timeout=120)
        yield oai, peers
        await oai.close()


@pytest.fixture
async def tiny(config_file: Path, services: StartServices) -> AsyncIterator[tuple[openai.AsyncOpenAI, Peers]]:
    async for pair in openai_client(config_file, await services("store", "engine")):
        yield pair


@pytest.fixture
async def real(config_file: Path, services: StartServices,
               real_model: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, Peers]]:
    update_config(config_file, engine={"chat_model": str(real_model), "n_ctx": 4096})
    async for pair in openai_client(config_file, await services("store", "engine")):
        yield pair


async def test_completions_streamed_and_not_agree(tiny: tuple[openai.AsyncOpenAI, Peers]) -> None:
    oai, _ = tiny
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    whole = await oai.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=12)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and whole.usage is not None
    assert whole.usage.completion_tokens >= 1 and whole.usage.total_tokens > whole.usage.prompt_tokens
    pieces, finishes, usage = [], [], None
    stream = await oai.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=12,
                                               stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for streamed in chunk.choices:
            pieces.append(streamed.delta.content or "")
            finishes.append(streamed.finish_reason)
    assert "".join(pieces) == choice.message.content  # greedy: the same text, token by token
    assert finishes[-1] == choice.finish_reason and usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_embeddings_and_models(tiny: tuple[openai.AsyncOpenAI, Peers]) -> None:
    oai, peers = tiny
    texts = ["dock door opened", "the boiler is hot"]
    direct = await peers.engine.call(ENGINE_EMBED, EmbedRequest(texts=texts))
    as_base64 = await oai.embeddings.create(model="any", input=texts)  # the client's default: base64
    as_floats = await oai.embeddings.create(model="any", input=texts[0], encoding_format="float")
    assert [item.index for item in as_base64.data] == [0, 1]
    for item, vector in zip(as_base64.data, direct.vectors, strict=True):
        assert np.allclose(item.embedding, vector, atol=1e-6)
    assert np.allclose(as_floats.data[0].embedding, direct.vectors[0], atol=1e-6)
    listed = await oai.models.list()
    assert listed.data == [] or all(model.object == "model" for model in listed.data)


async def test_errors_come_in_openais_shape(tiny: tuple[openai.AsyncOpenAI, Peers]) -> None:
    oai, _ = tiny
    user: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as bad:
        await oai.chat.completions.create(model="any", messages=user, temperature=7)
    assert bad.value.code == "bad_request" and "temperature" in bad.value.message
    with pytest.raises(openai.BadRequestError, match="messages"):
        await oai.chat.completions.create(model="any", messages=[])
    with pytest.raises(openai.BadRequestError, match="n"):
        await oai.chat.completions.create(model="any", messages=user, n=3)
    with pytest.raises(openai.BadRequestError, match="tool"):  # the tiny model's template knows no tools
        await oai.chat.completions.create(model="any", messages=user, tools=[LIGHT])  # type: ignore[list-item]
    stranger = openai.AsyncOpenAI(api_key="not-a-token", base_url=str(oai.base_url), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        await stranger.chat.completions.create(model="any", messages=user)
    assert denied.value.status_code == 401 and denied.value.body["type"] == "authentication_error"  # type: ignore[index]
    await stranger.close()


async def test_structured_output_and_tools_on_the_real_model(real: tuple[openai.AsyncOpenAI, Peers]) -> None:
    oai, _ = real
    shaped = await oai.chat.completions.create(
        model="any", temperature=0, messages=[{"role": "user", "content": "Turn the fan off. Answer as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "switch", "schema": SWITCH}})
    assert json.loads(shaped.choices[0].message.content or "") == {"device": "fan", "on": False}

    forced = await oai.chat.completions.create(
        model="any", temperature=0, tools=[LIGHT], tool_choice="required",  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Switch on the light in the kitchen."}])
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "set_light"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert "kitchen" in arguments["room"].lower() and arguments["on"] is True

    stream = await oai.chat.completions.create(
        model="any", temperature=0, tools=[LIGHT], tool_choice="required", stream=True,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Switch on the light in the kitchen."}])
    deltas = [choice async for chunk in stream for choice in chunk.choices]
    streamed = [call for choice in deltas for call in choice.delta.tool_calls or []]
    assert deltas[-1].finish_reason == "tool_calls" and streamed[0].function is not None
    assert json.loads(streamed[0].function.arguments or "") == arguments

    chinese = await oai.chat.completions.create(model="any", temperature=0, max_tokens=64,
                                                messages=[{"role": "user", "content": "用一句话介绍一下你自己。"}])
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in chinese.choices[0].message.content or "") >= 5


async def test_hostile_bodies_get_openai_errors(config_file: Path, services: StartServices) -> None:
    peers = await services("store")
    async with api_client(load_config(config_file), peers, max_body_bytes=64 * 1024) as (client, dispatcher):
        viewer = bearer(dispatcher, Role.VIEWER)
        cases: list[tuple[bytes, int, str]] = [
            (b'{"messages": [{"role": "user", "content": "hi"}', 400, "not JSON"),
            (b'["messages"]', 400, "valid dictionary"),
            (b'{"messages": [{"role": "root", "content": "x"}]}', 400, "messages.0.role"),
            (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000000}', 400, "max_tokens"),
            (b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}', 400,
             "schema"),
            (b'{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]}]}',
             400, "arguments are not JSON"),
            (b'{"input": []}', 400, "texts"),
            (b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"function": "rm -rf /"}]}', 400, "tools"),
        ]
        for body, status, words in cases:
            path = "/v1/embeddings" if b'"input"' in body else "/v1/chat/completions"
            reply = await client.post(path, data=body, headers={**viewer, "Content-Type": "application/json"})
            error = (await reply.json())["error"]
            assert reply.status == status and words in error["message"], (body, reply.status, error)
            assert error["type"] == "invalid_request_error"
        huge = await client.post("/v1/chat/completions", headers=viewer, json={
            "messages": [{"role": "user", "content": "x" * 100_000}]})
        assert huge.status == 413
        anonymous = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert anonymous.status == 401 and (await anonymous.json())["error"]["type"] == "authentication_error"
