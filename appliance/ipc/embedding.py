"""Text to vectors through the engine, for every caller that hands memories to the store.

The store never calls the engine itself (it starts first and depends on nothing), so callers
embed before they remember or recall. When the engine is down or has no embedding model, a
memory is still stored (found by full-text search) and a query falls back to text mode.
"""

from __future__ import annotations

import logging

from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Engine
from appliance.protocol.engine import ENGINE_EMBED, EmbedRequest

BATCH = 64  # EmbedRequest's limit


async def embed_or_none(engine: IpcClient[Engine], texts: list[str], log: logging.Logger) -> list[list[float]] | None:
    vectors: list[list[float]] = []
    try:
        for start in range(0, len(texts), BATCH):
            response = await engine.call(ENGINE_EMBED, EmbedRequest(texts=texts[start : start + BATCH]))
            vectors.extend(response.vectors)
    except IpcError as exc:
        log.warning("no embeddings (%s); storing and searching by text only", exc)
        return None
    return vectors
