"""Remember, recall, ingest and backfill: embedding by the engine, then the store, written once.

Used by every surface (through the memory commands), by mqtt for device events and by the
agent's backfill job. The store never calls the engine itself, so texts are embedded here.

The engine-down policy, the same for every caller:
- remember and ingest: stored without a vector (the reply says ``embedded: false``), found by
  full-text search at once; the agent's backfill embeds them when the engine is back.
- recall in hybrid mode: answered in text mode, and the reply says so (``mode: "text"`` and a
  ``fallback`` naming why).
- recall in vector mode: refused as ``unavailable``, naming the engine's problem.
- recall in text mode: never asks the engine.
- backfill: embeds nothing and says why.
After an embedding fails, the engine is not asked again for ``retry_after_s`` (30 s): a down
engine then costs callers nothing instead of a timeout each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from appliance.control.errors import CommandError
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import Engine, Store
from appliance.protocol.engine import ENGINE_EMBED, EmbedRequest
from appliance.protocol.store import (
    BATCH_CHUNKS,
    MAX_CHUNKS,
    STORE_INGEST,
    STORE_RECALL,
    STORE_REMEMBER,
    STORE_SET_VECTORS,
    STORE_UNEMBEDDED,
    DocumentIn,
    EmbeddingsIn,
    MemoryIn,
    RecallFilters,
    RecallMode,
    RecallRequest,
    RecallResponse,
    UnembeddedRequest,
)

EMBED_BATCH = 64  # EmbedRequest's limit
ENGINE_RETRY_S = 30.0


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]] | None
    problem: str = ""  # why there are no vectors


class MemoryClient:
    def __init__(self, store: IpcClient[Store], engine: IpcClient[Engine], log: logging.Logger,
                 *, retry_after_s: float = ENGINE_RETRY_S) -> None:
        self.store = store
        self.engine = engine
        self.log = log
        self.retry_after_s = retry_after_s
        self._engine_problem = ""
        self._engine_retry_at = 0.0

    async def embed(self, texts: list[str]) -> Embedded:
        if time.monotonic() < self._engine_retry_at:
            return Embedded(None, self._engine_problem)
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(texts), EMBED_BATCH):
                reply = await self.engine.call(ENGINE_EMBED, EmbedRequest(texts=texts[start : start + EMBED_BATCH]))
                vectors.extend(reply.vectors)
        except IpcError as exc:
            self._engine_problem = f"the engine cannot embed: {exc}"
            self._engine_retry_at = time.monotonic() + self.retry_after_s
            self.log.warning("no embeddings (%s); storing and searching by text only", exc)
            return Embedded(None, self._engine_problem)
        self._engine_retry_at = 0.0
        return Embedded(vectors)

    async def remember(self, memory: MemoryIn) -> tuple[int, bool]:
        """The new memory's id, and whether it was stored with a vector."""
        if memory.embedding is None:
            embedded = await self.embed([memory.text])
            if embedded.vectors is not None:
                memory = memory.model_copy(update={"embedding": embedded.vectors[0]})
        stored = await self.store.call(STORE_REMEMBER, memory)
        return stored.id, memory.embedding is not None

    async def recall(self, query: str, *, mode: RecallMode = "hybrid", k: int = 10,
                     filters: RecallFilters | None = None) -> RecallResponse:
        """Search by ``query``; it is embedded here unless the mode is text."""
        fallback, embedding = None, None
        if mode != "text":
            embedded = await self.embed([query])
            if embedded.vectors is not None:
                embedding = embedded.vectors[0]
            elif mode == "vector":
                raise CommandError("unavailable", Phrase("memory.vector_needs_engine", why=embedded.problem))
            else:
                mode, fallback = "text", f"hybrid search fell back to text: {embedded.problem}"
        request = RecallRequest(query=query, embedding=embedding, k=k, mode=mode, filters=filters or RecallFilters())
        reply = await self.store.call(STORE_RECALL, request)
        return reply.model_copy(update={"fallback": fallback}) if fallback else reply

    async def ingest(self, path: str, chunks: list[str], tags: list[str]) -> tuple[int, bool]:
        """Store a document's chunks (replacing an earlier ingest of ``path``): (replaced, embedded)."""
        if not chunks:
            raise CommandError("bad_request", Phrase("memory.no_text", path=path), field="text")
        if len(chunks) > MAX_CHUNKS:
            raise CommandError("too_large", Phrase("memory.too_many_chunks", path=path, n=len(chunks),
                                                    max=MAX_CHUNKS), field="text")
        vectors = (await self.embed(chunks)).vectors
        replaced = 0
        for start in range(0, len(chunks), BATCH_CHUNKS):
            document = DocumentIn(path=path, first_chunk=start, chunks=chunks[start : start + BATCH_CHUNKS],
                                  tags=tags, embeddings=vectors[start : start + BATCH_CHUNKS] if vectors else None)
            replaced += (await self.store.call(STORE_INGEST, document, timeout_s=600)).replaced
        return replaced, vectors is not None

    async def backfill(self, batch: int = 64) -> tuple[int, str]:
        """Give vectors to memories stored while the engine was down: (how many, why it stopped early)."""
        total = 0
        while items := (await self.store.call(STORE_UNEMBEDDED, UnembeddedRequest(limit=batch))).items:
            embedded = await self.embed([item.text for item in items])
            if embedded.vectors is None:
                return total, embedded.problem
            request = EmbeddingsIn(ids=[item.id for item in items], embeddings=embedded.vectors)
            total += (await self.store.call(STORE_SET_VECTORS, request)).stored
            if len(items) < batch:
                break
        return total, ""
