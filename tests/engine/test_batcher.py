"""Continuous batching on real llama.cpp with the tiny generated chat model (random weights).

The batcher is driven through the engine service, as the IPC server drives it; the counters
it keeps per decode step show what was batched together. Random weights sample the end token
now and then (about 1 in 259), so replies may finish early with "stop".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from appliance.config import ApplianceConfig
from appliance.engine.service import EngineService
from appliance.ipc import Busy
from appliance.protocol.engine import ChatMessage, GenerateChunk, GenerateRequest, Priority


def with_resources(config: ApplianceConfig, **resource: object) -> ApplianceConfig:
    return config.model_copy(update={"resource": config.resource.model_copy(update=resource)})


@pytest.fixture
async def engine(config: ApplianceConfig) -> AsyncIterator[EngineService]:
    service = EngineService(config)
    await service.start()
    yield service
    await service.stop()


async def collect(engine: EngineService, request: GenerateRequest) -> list[GenerateChunk]:
    return [c async for c in engine.generate(request)]


async def test_concurrent_streams_share_decode_steps(config: ApplianceConfig) -> None:
    # Long replies in a long context, so the four overlap however slowly they arrive.
    engine = EngineService(config.model_copy(update={"engine": config.engine.model_copy(update={"n_ctx": 4096})}))
    await engine.start()
    requests = [GenerateRequest(prompt=f"stream {i}", max_tokens=1000, seed=i, ignore_eos=True) for i in range(4)]
    results = await asyncio.gather(*(collect(engine, r) for r in requests))
    await engine.stop()
    assert all(r[-1].finish_reason == "length" and r[-1].completion_tokens == 1000 for r in results)
    widest = max(generated for _, generated, _ in engine.counters._steps)
    assert widest == 4, "four streams should have been decoded in one batch"
    assert engine.counters.generated_tokens == sum(r[-1].completion_tokens for r in results)


async def test_batched_stream_matches_a_lone_stream(engine: EngineService) -> None:
    request = GenerateRequest(prompt="the same words", max_tokens=16, temperature=0.0)
    alone = "".join(c.text for c in await collect(engine, request))
    together = await asyncio.gather(*(collect(engine, request) for _ in range(3)))
    assert all("".join(c.text for c in chunks) == alone for chunks in together)


async def test_cancel_stops_decoding_within_one_token(engine: EngineService) -> None:
    stream = engine.generate(GenerateRequest(prompt="x", max_tokens=4000, seed=3, ignore_eos=True))
    async for _ in stream:
        break
    await stream.aclose()  # sets the job's cancel flag before it returns
    generated_at_cancel = engine.counters.generated_tokens
    assert engine.chat is not None
    for _ in range(200):
        if engine.chat.batcher.snapshot()[1] == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.chat.batcher.snapshot() == (0, 0, 0)
    assert engine.counters.generated_tokens - generated_at_cancel <= 1
    assert engine.counters.cancelled == 1


async def wait_for_queue(engine: EngineService, waiting: int) -> None:
    assert engine.chat is not None
    for _ in range(500):
        if engine.chat.batcher.snapshot()[:2] == (waiting, 1):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the queue never reached {waiting}: {engine.chat.batcher.snapshot()}")


def one_slot(config: ApplianceConfig, max_queue: int) -> ApplianceConfig:
    """One stream at a time, and a context long enough that a blocker outlives the test's setup."""
    config = with_resources(config, max_concurrency=1, max_queue=max_queue)
    return config.model_copy(update={"engine": config.engine.model_copy(update={"n_ctx": 4096})})


async def test_interactive_jumps_the_queue(config: ApplianceConfig) -> None:
    engine = EngineService(one_slot(config, max_queue=4))
    await engine.start()
    order: list[str] = []

    async def run(name: str, priority: Priority, tokens: int) -> None:
        async for chunk in engine.generate(GenerateRequest(prompt=name, max_tokens=tokens, seed=1,
                                                           priority=priority, ignore_eos=True)):
            if chunk.index == 0:
                order.append(name)

    blocker = asyncio.create_task(run("blocker", Priority.BACKGROUND, 4000))
    await wait_for_queue(engine, 0)
    later = [asyncio.create_task(run(name, priority, 4)) for name, priority in
             (("background", Priority.BACKGROUND), ("scheduled", Priority.SCHEDULED),
              ("interactive", Priority.INTERACTIVE))]
    await wait_for_queue(engine, 3)
    blocker.cancel()  # the client goes away: its slot frees at the next token
    await asyncio.gather(*later)
    await engine.stop()
    assert order == ["blocker", "interactive", "scheduled", "background"]


async def test_full_queue_is_busy_with_retry_after(config: ApplianceConfig) -> None:
    engine = EngineService(one_slot(config, max_queue=1))
    await engine.start()
    blocker = asyncio.create_task(collect(engine, GenerateRequest(prompt="a", max_tokens=4000, ignore_eos=True)))
    await wait_for_queue(engine, 0)
    waiting = asyncio.create_task(collect(engine, GenerateRequest(prompt="b", max_tokens=2)))
    await wait_for_queue(engine, 1)
    with pytest.raises(Busy, match=r"engine busy: 1 streams running and 1 waiting.*retry after") as caught:
        await collect(engine, GenerateRequest(prompt="c", max_tokens=2))
    assert 1.0 <= caught.value.retry_after_s <= 60.0
    blocker.cancel()
    assert (await waiting)[-1].done
    assert engine.counters.rejected == 1
    await engine.stop()


async def test_system_prompt_prefix_is_cached(engine: EngineService) -> None:
    system = ChatMessage(role="system", content="You watch the loading dock sensors. " * 6)

    def ask(question: str) -> GenerateRequest:
        return GenerateRequest(messages=[system, ChatMessage(role="user", content=question)],
                               max_tokens=8, temperature=0.0)

    cold = await collect(engine, ask("Is door 3 open?"))
    warm = await collect(engine, ask("Is door 3 open?"))
    other = await collect(engine, ask("What is the temperature?"))
    assert cold[-1].cached_tokens == 0
    assert warm[-1].cached_tokens > 200 and other[-1].cached_tokens == warm[-1].cached_tokens
    assert "".join(c.text for c in warm) == "".join(c.text for c in cold)
    assert engine.counters.prefix_hits == 2


async def test_kv_reservation_makes_a_long_job_wait_not_fail(config: ApplianceConfig) -> None:
    engine = EngineService(with_resources(config, max_concurrency=4))
    await engine.start()  # n_ctx 512 in the test config
    big = [GenerateRequest(prompt="p" * 100, max_tokens=300, seed=i, ignore_eos=True) for i in range(3)]
    results = await asyncio.gather(*(collect(engine, r) for r in big))
    assert all(r[-1].finish_reason == "length" and r[-1].completion_tokens == 300 for r in results)
    assert engine.counters.requests == 3 and engine.counters.completed == 3
    await engine.stop()
