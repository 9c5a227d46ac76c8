"""The default embedder: the packaged multilingual Universal Sentence Encoder, in the engine."""

from __future__ import annotations

import asyncio

import numpy as np

from appliance.config import ApplianceConfig
from appliance.engine.service import EngineService
from appliance.protocol.common import Empty, ServiceState
from appliance.protocol.engine import EmbedRequest


def with_encoder(config: ApplianceConfig, **memory: int) -> ApplianceConfig:
    engine = config.engine.model_copy(update={"embedding_encoder": "use-multilingual-v3"})
    return config.model_copy(update={"engine": engine,
                                     "memory": config.memory.model_copy(update={"vector_dim": 512, **memory})})


async def test_chinese_and_english_of_one_meaning_are_near(config: ApplianceConfig) -> None:
    engine = EngineService(with_encoder(config))
    await engine.start()
    try:
        assert engine.state is ServiceState.READY, engine.health().detail
        status = await engine.status(Empty())
        assert status.embedding_model == "use-multilingual-v3"
        texts = ["二号实验室的冰箱温度必须保持在零下十八度以下。",
                 "The fridge in lab two must stay below minus 18 degrees.", "锅炉每年十月由供应商检修保养一次。"]
        # Several callers at once share batches, and each gets its own vectors back in order.
        replies = await asyncio.gather(*(engine.embed(EmbedRequest(texts=[t])) for t in texts[:3]))
        vectors = np.array([r.vectors[0] for r in replies])
        assert vectors.shape == (3, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        fridge_zh, fridge_en, boiler_zh = vectors
        assert fridge_zh @ fridge_en > fridge_zh @ boiler_zh + 0.1  # meaning across languages beats the script
        together = (await engine.embed(EmbedRequest(texts=texts[:3]))).vectors
        assert np.allclose(np.array(together), vectors, atol=1e-5)
        odd = await engine.embed(EmbedRequest(texts=["冰" * 65_536, "🔒\u200b", "\uff21\uff22\uff23"]))  # full-width
        assert len(odd.vectors) == 3 and all(np.isfinite(v).all() for v in odd.vectors)
    finally:
        await engine.stop()


async def test_a_vector_dimension_the_encoder_does_not_give_is_named(config: ApplianceConfig) -> None:
    engine = EngineService(with_encoder(config, vector_dim=384))
    await engine.start()
    try:
        health = engine.health()
        assert health.state is ServiceState.DEGRADED
        assert "gives 512-dim vectors but memory.vector_dim is 384" in health.detail
    finally:
        await engine.stop()


def test_the_default_config_uses_it_with_its_dimension() -> None:
    default = ApplianceConfig()
    assert default.engine.embedding_encoder == "use-multilingual-v3" and default.memory.vector_dim == 512
    assert default.embedding_identity == "use-multilingual-v3"
    gguf = ApplianceConfig.model_validate({"engine": {"embedding_encoder": "gguf"}})
    assert gguf.memory.vector_dim == 384 and gguf.embedding_identity.startswith("gguf:")
