"""The embedding model: BERT-family (or any pooled) GGUF, mean pooling, unit-length vectors.

A request's texts are packed into batches of up to ``BATCH_TOKENS`` tokens and ``MAX_SEQS``
sequences, one sequence per text, and each batch is one llama_decode. Texts longer than the
model's trained context are cut to fit (keeping the closing separator token), as BERT itself
cannot read further.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np

from appliance.engine.errors import EngineError
from appliance.engine.llama import Batch, ContextSettings, LlamaContext, LlamaModel
from appliance.engine.metrics import EngineCounters
from appliance.engine.sharedbatch import SharedBatches
from appliance.protocol.engine import EmbedResponse
from appliance.runtime.threads import in_daemon_thread

BATCH_TOKENS = 2048
MAX_SEQS = 64


class EmbeddingModel:
    def __init__(self, model: LlamaModel, ctx: LlamaContext, counters: EngineCounters) -> None:
        self.model, self.ctx, self.counters = model, ctx, counters
        self.path = model.path
        self.dim = model.n_embd
        limit = model.metadata("sentence_transformers.max_seq_length")  # written by our converter
        self.max_tokens = min(int(limit) if limit and limit.isdigit() else model.n_ctx_train, BATCH_TOKENS)
        self._batch = Batch(BATCH_TOKENS)
        self._batches = SharedBatches(self._embed_sync, MAX_SEQS, "embed", counters)

    @classmethod
    async def load(cls, path: Path, *, n_threads: int, n_gpu_layers: int, counters: EngineCounters,
                   cpu_repack: bool = True) -> EmbeddingModel:
        def load() -> EmbeddingModel:
            model = LlamaModel(path, n_gpu_layers=n_gpu_layers, cpu_repack=cpu_repack)
            try:
                settings = ContextSettings(n_ctx=BATCH_TOKENS, n_batch=BATCH_TOKENS, n_ubatch=BATCH_TOKENS,
                                           n_seq_max=MAX_SEQS, n_threads=n_threads, n_threads_batch=n_threads,
                                           embeddings=True)
                return cls(model, LlamaContext(model, settings), counters)
            except Exception:
                model.close()
                raise

        return await in_daemon_thread(load, "load-embedding")

    def _encode(self, text: str) -> list[int]:
        tokens = self.model.tokenize(text, add_special=True, parse_special=False)
        if len(tokens) > self.max_tokens:
            tokens = [*tokens[: self.max_tokens - 1], tokens[-1]]
        return tokens

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        encoded = [self._encode(t) for t in texts]
        vectors: list[list[float]] = []
        start = 0
        while start < len(encoded):
            end, used = start, 0
            while end < len(encoded) and end - start < MAX_SEQS and used + len(encoded[end]) <= BATCH_TOKENS:
                used += len(encoded[end])
                end += 1
            vectors.extend(self._decode(encoded[start:end]))
            start = end
        return vectors

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        batch = self._batch
        batch.clear()
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.add(token, pos, seq, True)
        status = batch.decode(self.ctx)
        out = []
        for seq in range(len(group)):
            if status == 0:
                raw = llama_cpp.llama_get_embeddings_seq(self.ctx.ptr, seq)
                vector = np.ctypeslib.as_array(raw, shape=(self.dim,)).astype(np.float64)
                norm = float(np.linalg.norm(vector)) or 1.0
                out.append((vector / norm).tolist())
            self.ctx.forget(seq)
        if status != 0:
            raise EngineError(f"embedding decode failed with status {status}")
        return out

    async def embed(self, texts: list[str]) -> EmbedResponse:
        """Texts of callers that arrive together share one llama_decode (engine/sharedbatch.py)."""
        vectors = await self._batches.embed(texts)
        self.counters.embed_requests += 1
        self.counters.embed_texts += len(texts)
        return EmbedResponse(dim=self.dim, vectors=vectors)

    def close(self) -> None:
        self._batch.close()
        self.ctx.close()
        self.model.close()
