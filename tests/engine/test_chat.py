"""Generation over IPC against a real engine process (tiny random-weight models, real llama.cpp):
chat templates, JSON-schema constrained output, cancel on disconnect, metrics, bad input."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ipc import BadRequest, IpcClient
from appliance.protocol.engine import ENGINE_GENERATE, ENGINE_METRICS, ChatMessage, GenerateChunk, GenerateRequest
from tests.helpers import serve, wait_ready

SWITCH = {"type": "object", "properties": {"device": {"type": "string", "enum": ["door", "fan", "light"]},
                                           "on": {"type": "boolean"}}, "required": ["device", "on"]}


@pytest.fixture
def engine_process(config_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = serve(config_file, "engine")
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture
async def engine(config_file: Path, engine_process: subprocess.Popen[bytes]) -> AsyncIterator[IpcClient]:
    client = IpcClient("engine", load_config(config_file).socket_path("engine"), 10.0)
    await wait_ready(client)
    yield client
    await client.close()


async def complete(engine: IpcClient, request: GenerateRequest) -> list[GenerateChunk]:
    return [c async for c in engine.stream(ENGINE_GENERATE, request)]


async def test_chat_messages_use_the_model_template(engine: IpcClient) -> None:
    chat = await complete(engine, GenerateRequest(
        messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")],
        max_tokens=5, temperature=0.0))
    rendered = "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"  # the tiny model's template
    raw = await complete(engine, GenerateRequest(prompt=rendered, max_tokens=5, temperature=0.0))
    assert chat[-1].done and chat[-1].prompt_tokens == raw[-1].prompt_tokens
    assert "".join(c.text for c in chat) == "".join(c.text for c in raw)


async def test_json_schema_output_is_parsed_and_valid(engine: IpcClient) -> None:
    for seed in range(3):
        last = (await complete(engine, GenerateRequest(prompt="switch", json_schema=SWITCH, max_tokens=60,
                                                       seed=seed)))[-1]
        assert last.done and isinstance(last.parsed, dict)
        assert set(last.parsed) == {"device", "on"} and isinstance(last.parsed["on"], bool)
        assert last.parsed["device"] in ("door", "fan", "light")


async def test_what_the_grammar_cannot_enforce_is_still_checked(engine: IpcClient) -> None:
    """The grammar converter cannot express multipleOf or a minimum, so the grammar admits any
    integer; the validator still checks the reply, and the random model's number is refused."""
    schema = {"type": "object", "required": ["n"],
              "properties": {"n": {"type": "integer", "multipleOf": 1000003, "exclusiveMinimum": 0}}}
    for seed in range(3):
        with pytest.raises(BadRequest, match="does not satisfy json_schema"):
            await complete(engine, GenerateRequest(prompt="x", json_schema=schema, max_tokens=60, seed=seed))


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "nonsense"}, "json_schema: not a valid JSON schema"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}, "cannot be compiled"),
])
async def test_bad_schemas_are_refused_before_generation(engine: IpcClient, schema: dict[str, object],
                                                         message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        await complete(engine, GenerateRequest(prompt="x", json_schema=schema))


@pytest.mark.parametrize(("fields", "message"), [
    ({"temperature": 99}, "temperature: Input should be less than or equal to 5"),
    ({"top_p": 0}, "top_p: Input should be greater than 0"),
    ({"max_tokens": 10**9}, "max_tokens: Input should be less than or equal to 8192"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"priority": "urgent"}, "priority: Input should be 'interactive', 'scheduled' or 'background'"),
    ({"stop": ["x" * 65]}, "each stop sequence must be 1 to 64 characters"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "give exactly one of prompt or messages"),
])
async def test_absurd_parameters_name_the_allowed_range(engine: IpcClient, fields: dict[str, object],
                                                        message: str) -> None:
    payload = {"prompt": "x", **fields}
    session = engine._client()
    async with session.post("http://engine/v1/generate", json=payload) as response:
        body = await response.json()
    assert response.status == 400 and message in body["error"]["message"], body


async def test_prompt_longer_than_the_context_names_both_counts(engine: IpcClient) -> None:
    with pytest.raises(BadRequest, match=r"prompt is 30\d\d tokens; the context holds 512 tokens"):
        await complete(engine, GenerateRequest(prompt="z" * 3000))


async def test_disconnect_cancels_within_a_token_and_metrics_show_it(engine: IpcClient) -> None:
    stream = engine.stream(ENGINE_GENERATE, GenerateRequest(prompt="x", max_tokens=8000, ignore_eos=True))
    async for _ in stream:
        break
    await stream.aclose()  # closes the connection, as a phone app losing its network would
    for _ in range(300):
        metrics = await engine.call(ENGINE_METRICS)
        if metrics.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert metrics.active_streams == 0 and metrics.cancelled_total == 1
    assert metrics.generated_tokens_total < 500  # it stopped long before the context was full
    await complete(engine, GenerateRequest(prompt="after", max_tokens=4))
    metrics = await engine.call(ENGINE_METRICS)
    assert metrics.requests_total == 2 and metrics.completed_total == 1 and metrics.kv_cells_used == 0
    assert metrics.kv_cells_total == 512 and metrics.max_concurrency == 4
    assert metrics.generation_tokens_per_s > 0 and metrics.ttft_ms_p50 > 0


def test_a_failed_load_steps_down_context_first(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's allocation failure is simulated (a real one needs a box short of memory):
    contexts above 1024 cells 'fail', so the load must retry at 2048 and then succeed at 1024."""
    from appliance.engine import chat
    from appliance.engine.llama import LlamaContext, LoadError
    from appliance.engine.plan import budget_for, plan_model
    from appliance.modelfiles.gguf_info import read_model_info
    from tests.engine.boxes import BOXES

    tried: list[int] = []

    def failing_context(model: object, settings: object) -> LlamaContext:
        n_ctx = settings.n_ctx  # type: ignore[attr-defined]
        tried.append(n_ctx)
        if n_ctx > 1024:
            raise LoadError(f"could not create a context of {n_ctx} tokens")
        return LlamaContext(model, settings)  # type: ignore[arg-type]

    monkeypatch.setattr(chat, "LlamaContext", failing_context)
    hw = BOXES["x86-16gb-no-gpu"]
    budget = budget_for(hw, gpu_enabled=False, gpu_fraction=0.7, gpu_reserve_bytes=0, ram_reserve_fraction=0.1)
    plan = plan_model(read_model_info(models["chat"]), hw, budget, n_ctx=4096, n_seq=2)
    model, ctx, used = chat.load_with_step_down(models["chat"], plan, 2)
    assert tried == [4096, 2048, 1024] and used.n_ctx == 1024 and ctx.n_ctx == 1024
    assert "load failed: stepped the context down to 1024" in used.why[-1]
    ctx.close()
    model.close()
