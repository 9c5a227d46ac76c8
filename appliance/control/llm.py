"""The model as it is: generate (streamed) and embed, with no memory and no conversation around
them; what the caller sends is what the model sees. The OpenAI-compatible API (api/openai.py) is
the adapter most programs use; `chat` is the memory-aware conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, command
from appliance.protocol.engine import (
    ENGINE_EMBED,
    ENGINE_GENERATE,
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
)

# A long prompt (or a grammar-constrained reply, which streams nothing until it is whole) can keep
# the engine quiet for a while on a small CPU; chat waits as long.
GENERATE_QUIET_S = 120.0


async def generate(ctx: Context, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
    async for chunk in ctx.peers.engine.stream(ENGINE_GENERATE, request, timeout_s=GENERATE_QUIET_S):
        yield chunk


async def embed(ctx: Context, request: EmbedRequest) -> EmbedResponse:
    return await ctx.peers.engine.call(ENGINE_EMBED, request)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("llm.generate", "Generate from a prompt or chat messages (tools, JSON schema), streamed.",
            GenerateRequest, GenerateChunk, Permission.VIEWER, generate, effect=Effect.READ, streaming=True,
            tags=("llm",)),
    command("llm.embed", "Embed texts with the embedding model (unit vectors).", EmbedRequest, EmbedResponse,
            Permission.VIEWER, embed, effect=Effect.READ, tags=("llm",)),
)
