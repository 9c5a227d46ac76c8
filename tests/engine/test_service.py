"""The engine on real llama.cpp with the tiny generated GGUF models (random weights)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig
from appliance.engine.service import EngineService
from appliance.ipc import BadRequest, Unavailable
from appliance.protocol.common import ServiceState
from appliance.protocol.engine import EmbedRequest, GenerateRequest


async def started(config: ApplianceConfig) -> EngineService:
    engine = EngineService(config)
    await engine.start()
    return engine


async def test_generate_streams_and_finishes(config: ApplianceConfig) -> None:
    engine = await started(config)
    assert engine.state is ServiceState.READY, engine.health().detail
    chunks = [c async for c in engine.generate(GenerateRequest(prompt="hello", max_tokens=12, seed=1))]
    last = chunks[-1]
    assert last.done and last.finish_reason == "length"
    assert last.prompt_tokens > 0
    assert [c.index for c in chunks] == list(range(len(chunks)))


async def test_same_seed_same_text(config: ApplianceConfig) -> None:
    engine = await started(config)
    request = GenerateRequest(prompt="the door", max_tokens=10, seed=42, temperature=0.9)
    first = "".join([c.text async for c in engine.generate(request)])
    second = "".join([c.text async for c in engine.generate(request)])
    assert first == second


async def test_abandoned_stream_frees_the_model(config: ApplianceConfig) -> None:
    engine = await started(config)
    stream = engine.generate(GenerateRequest(prompt="x", max_tokens=2000, seed=3))
    async for _ in stream:
        break
    await stream.aclose()
    after = [c async for c in engine.generate(GenerateRequest(prompt="y", max_tokens=3, seed=3))]
    assert after[-1].done


async def test_prompt_longer_than_context_names_the_counts(config: ApplianceConfig) -> None:
    engine = await started(config)
    with pytest.raises(BadRequest, match=r"prompt is \d+ tokens; the context holds 512"):
        async for _ in engine.generate(GenerateRequest(prompt="z" * 3000)):
            pass


async def test_embeddings_are_normalised_and_sized(config: ApplianceConfig) -> None:
    engine = await started(config)
    reply = await engine.embed(EmbedRequest(texts=["door opened", "temperature 21C"]))
    assert reply.dim == 384 and len(reply.vectors) == 2
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in reply.vectors)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"GGUF\x03\x00\x00\x00" + b"\x00" * 20])
async def test_missing_or_corrupt_model_degrades_instead_of_crashing(
        config: ApplianceConfig, tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(content)
    engine = await started(config.model_copy(update={"engine": config.engine.model_copy(
        update={"chat_model": broken, "embedding_model": tmp_path / "absent.gguf"})}))
    health = engine.health()
    assert health.state is ServiceState.DEGRADED
    assert "no chat model" in health.detail and str(broken) in health.detail
    assert "absent.gguf: no such file" in health.detail
    with pytest.raises(Unavailable):
        async for _ in engine.generate(GenerateRequest(prompt="hi")):
            pass
    with pytest.raises(Unavailable):
        await engine.embed(EmbedRequest(texts=["x"]))


async def test_two_streams_take_turns(config: ApplianceConfig) -> None:
    engine = await started(config)

    async def run(seed: int) -> str:
        return "".join([c.text async for c in engine.generate(GenerateRequest(prompt="a", max_tokens=8, seed=seed))])

    first, second = await asyncio.gather(run(1), run(1))
    assert first == second
