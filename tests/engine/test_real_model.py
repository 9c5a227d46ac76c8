"""The real default chat model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M from the package index) in a real
engine process: its own template with tools, tool calls produced and parsed (greedy), calls forced
by the grammar, structured output, and Chinese in, Chinese out.

What the model says is checked loosely (a name, a city, Chinese characters), never word for word:
the engine, not the model's wording, is under test. The fixed prompts and their outcomes with
and without the grammar over 50 requests are measured by bench/tools.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.engine.template import ChatTemplate
from appliance.ipc import IpcClient
from appliance.modelfiles.gguf_info import read_model_info
from appliance.protocol.engine import (
    ENGINE_GENERATE,
    ChatMessage,
    GenerateChunk,
    GenerateRequest,
    Tool,
    ToolCall,
    ToolFunction,
)
from tests.helpers import free_port, serve, wait_ready, write_config

pytestmark = pytest.mark.slow
WEATHER = Tool(function=ToolFunction(name="get_weather", description="当前天气 / the current weather in a city",
                                     parameters={"type": "object", "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}))
LIGHT = Tool(function=ToolFunction(name="set_light", description="switch the light in a room on or off",
                                   parameters={"type": "object", "properties": {
                                       "room": {"type": "string"}, "on": {"type": "boolean"}},
                                       "required": ["room", "on"]}))
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def config_path(real_model: Path, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    return write_config(folder / "agent.yaml", {
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "engine": {"chat_model": str(real_model), "embedding_encoder": "gguf",
                   "embedding_model": str(models["embedding"]), "n_ctx": 4096},
        "api": {"port": free_port()}, "mqtt": {"port": free_port()}})


@pytest.fixture(scope="module")
def engine_process(config_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = serve(config_path, "engine", log=config_path.with_name("engine.log"))
    yield process
    process.terminate()
    process.wait(15)


@pytest.fixture
async def engine(config_path: Path, engine_process: subprocess.Popen[bytes]) -> AsyncIterator[IpcClient]:
    client = IpcClient("engine", load_config(config_path).socket_path("engine"), 120.0)
    await wait_ready(client, timeout_s=120)
    yield client
    await client.close()


async def ask(engine: IpcClient, text: str, **options: object) -> GenerateChunk:
    request = GenerateRequest.model_validate({"messages": [{"role": "user", "content": text}], "temperature": 0.0,
                                              "max_tokens": 96, **options})
    chunks = [chunk async for chunk in engine.stream(ENGINE_GENERATE, request)]
    return chunks[-1].model_copy(update={"text": "".join(c.text for c in chunks)})


def test_the_models_own_template_lays_out_tools(real_model: Path) -> None:
    template = ChatTemplate(read_model_info(real_model).chat_template)
    turns = [ChatMessage(role="user", content="Weather in Paris?"),
             ChatMessage(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})]),
             ChatMessage(role="tool", content='{"temp_c": 21}')]
    text = template.render(turns, add_generation_prompt=True, tools=[WEATHER])
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "当前天气' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>' in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(("prompt", "call"), [
    ("What is the weather in Paris right now?", ("get_weather", "city", "paris")),
    ("Switch on the light in the kitchen.", ("set_light", "room", "kitchen")),
    ("北京现在的天气怎么样？", ("get_weather", "city", "北京")),  # noqa: RUF001 - Chinese punctuation
])
async def test_the_model_calls_a_tool_and_the_call_is_parsed(engine: IpcClient, prompt: str,
                                                            call: tuple[str, str, str]) -> None:
    name, key, value = call
    last = await ask(engine, prompt, tools=[WEATHER.model_dump(), LIGHT.model_dump()])
    assert last.tool_calls, last.text
    [made] = last.tool_calls
    assert made.name == name and value in str(made.arguments[key]).lower(), last.text


async def test_a_demanded_call_is_forced_by_the_grammar(engine: IpcClient) -> None:
    last = await ask(engine, "Hello! How are you today?", tools=[WEATHER.model_dump(), LIGHT.model_dump()],
                     tool_choice="required")
    assert last.text.startswith("<tool_call>\n") and last.text.rstrip().endswith("</tool_call>")
    assert last.tool_calls and last.tool_calls[0].name in ("get_weather", "set_light")
    named = await ask(engine, "Hello!", tools=[WEATHER.model_dump(), LIGHT.model_dump()], tool_choice="set_light")
    assert named.tool_calls and named.tool_calls[0].name == "set_light"
    assert isinstance(named.tool_calls[0].arguments["on"], bool)


async def test_structured_output_through_the_grammar(engine: IpcClient) -> None:
    schema = {"type": "object", "properties": {"device": {"type": "string", "enum": ["door", "fan", "light"]},
                                               "on": {"type": "boolean"}}, "required": ["device", "on"]}
    last = await ask(engine, "Turn the fan off. Answer as JSON.", json_schema=schema)
    assert last.parsed == {"device": "fan", "on": False}, last.text


async def test_chinese_in_chinese_out(engine: IpcClient) -> None:
    last = await ask(engine, "请用一句话介绍一下你自己。")
    assert len(CJK.findall(last.text)) >= 5, last.text
