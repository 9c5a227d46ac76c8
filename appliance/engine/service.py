"""The engine service: loads the configured models, then answers `generate` and `embed`.

A missing or broken model never takes the engine down: it stays up, reports `degraded` with
the reason, and answers the affected calls with `unavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from appliance.engine.models import ChatModel, EmbeddingModel, ModelFileError, gpu_layers
from appliance.ipc.errors import Unavailable
from appliance.ipc.messages import (
    ENGINE_EMBED,
    ENGINE_GENERATE,
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
    ServiceState,
)
from appliance.ipc.server import IpcServer
from appliance.runtime.notify import extending_start_timeout
from appliance.runtime.service import Service


class EngineService(Service):
    name = "engine"

    chat: ChatModel | None = None
    embedder: EmbeddingModel | None = None

    def register(self, ipc: IpcServer) -> None:
        ipc.add_stream(ENGINE_GENERATE, self.generate)
        ipc.add(ENGINE_EMBED, self.embed)

    async def start(self) -> None:
        engine = self.config.engine
        layers = gpu_layers(self.config.resource.gpu_enabled)
        problems: list[str] = []
        async with extending_start_timeout():
            chat_path = self.config.chat_model_path
            self.set_state(self.state, f"loading chat model {chat_path}")
            try:
                self.chat = await ChatModel.load(chat_path, n_ctx=engine.n_ctx,
                                                 n_threads=engine.n_threads, n_gpu_layers=layers)
            except ModelFileError as exc:
                problems.append(f"no chat model: {exc}")
            try:
                self.embedder = await EmbeddingModel.load(
                    self.config.embedding_model_path, n_threads=engine.n_threads, n_gpu_layers=layers)
            except ModelFileError as exc:
                problems.append(f"no embedding model: {exc}")
        if self.embedder is not None and self.embedder.dim != self.config.memory.vector_dim:
            problems.append(f"embedding model gives {self.embedder.dim}-dim vectors but "
                            f"memory.vector_dim is {self.config.memory.vector_dim}")
        if problems:
            self.set_state(ServiceState.DEGRADED, "; ".join(problems))
        else:
            self.set_state(ServiceState.READY, f"chat {chat_path.name}, gpu layers {layers}")

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateChunk, None]:
        if self.chat is None:
            raise Unavailable("no chat model loaded; see the engine's health detail")
        async for chunk in self.chat.generate(request):
            yield chunk

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        if self.embedder is None:
            raise Unavailable("no embedding model loaded; see the engine's health detail")
        return await self.embedder.embed(request.texts)
