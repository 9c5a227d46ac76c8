"""Loading GGUF models with llama-cpp-python and running them off the event loop.

One `ChatModel` decodes one stream at a time (a lock held for the whole stream); batched
decoding of several streams is the engine issue's work. Every llama.cpp call runs in a
daemon thread, and a stream whose reader goes away stops within one token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, cast

import llama_cpp

from appliance.ipc.errors import BadRequest, IpcError
from appliance.ipc.messages import EmbedResponse, GenerateChunk, GenerateRequest
from appliance.runtime.threads import in_daemon_thread

GGUF_MAGIC = b"GGUF"


class ModelFileError(Exception):
    """The file is missing, unreadable or not a GGUF model llama.cpp can load."""


def check_gguf(path: Path) -> None:
    """Cheap checks with clear messages before llama.cpp sees the file."""
    try:
        with path.open("rb") as handle:
            header = handle.read(8)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror}") from None
    if header[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (starts with {header[:4]!r}, expected b'GGUF')")
    if len(header) < 8:
        raise ModelFileError(f"{path}: truncated GGUF header")


def _load(path: Path, **params: Any) -> llama_cpp.Llama:
    check_gguf(path)
    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **params)
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: llama.cpp could not load it: {exc}") from None


def gpu_layers(gpu_enabled: bool) -> int:
    """All layers on the GPU when one is usable, none otherwise (the tuner refines this later)."""
    return -1 if gpu_enabled and llama_cpp.llama_supports_gpu_offload() else 0


class ChatModel:
    def __init__(self, llm: llama_cpp.Llama, path: Path) -> None:
        self.llm = llm
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, path: Path, *, n_ctx: int, n_threads: int | None, n_gpu_layers: int) -> ChatModel:
        llm = await in_daemon_thread(
            lambda: _load(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers), "load-chat")
        return cls(llm, path)

    def _prompt_tokens(self, prompt: str) -> int:
        count = len(self.llm.tokenize(prompt.encode(), add_bos=True, special=False))
        if count >= self.llm.n_ctx():
            raise BadRequest(f"prompt is {count} tokens; the context holds {self.llm.n_ctx()} "
                             "tokens including the reply")
        return count

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateChunk, None]:
        async with self._lock:
            started = time.monotonic()
            prompt_tokens = await in_daemon_thread(lambda: self._prompt_tokens(request.prompt), "tokenize")
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
            cancelled = threading.Event()
            finished = in_daemon_thread(lambda: self._decode(request, loop, queue, cancelled), "decode")
            index, reason = 0, None
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise IpcError(f"decoding failed: {item}") from item
                    reason = item["finish_reason"] or reason
                    if item["text"]:
                        yield GenerateChunk(index=index, text=item["text"])
                        index += 1
                yield GenerateChunk(index=index, done=True, finish_reason=reason or "stop",
                                    prompt_tokens=prompt_tokens, completion_tokens=index,
                                    elapsed_ms=round((time.monotonic() - started) * 1000, 2))
            finally:
                cancelled.set()
                # Hold the lock until the decoder thread is really done with the context.
                await asyncio.shield(finished)

    def _decode(self, request: GenerateRequest, loop: asyncio.AbstractEventLoop,
                queue: asyncio.Queue[dict[str, Any] | BaseException | None],
                cancelled: threading.Event) -> None:
        def stop_if_cancelled(_tokens: Any, _logits: Any) -> bool:
            return cancelled.is_set()

        try:
            stream = self.llm.create_completion(
                request.prompt, max_tokens=request.max_tokens, temperature=request.temperature,
                top_p=request.top_p, seed=request.seed, stop=request.stop, stream=True,
                stopping_criteria=llama_cpp.StoppingCriteriaList([stop_if_cancelled]))
            for part in cast(Iterator[dict[str, Any]], stream):
                choice = part["choices"][0]
                loop.call_soon_threadsafe(queue.put_nowait, {
                    "text": choice["text"], "finish_reason": choice["finish_reason"]})
                if cancelled.is_set():
                    break
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)


class EmbeddingModel:
    def __init__(self, llm: llama_cpp.Llama, path: Path) -> None:
        self.llm = llm
        self.path = path
        self.dim = int(llm.n_embd())
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, path: Path, *, n_threads: int | None, n_gpu_layers: int) -> EmbeddingModel:
        llm = await in_daemon_thread(lambda: _load(
            path, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=512,
            n_batch=512, n_threads=n_threads, n_gpu_layers=n_gpu_layers), "load-embedding")
        return cls(llm, path)

    async def embed(self, texts: list[str]) -> EmbedResponse:
        async with self._lock:
            vectors = await in_daemon_thread(lambda: self.llm.embed(texts, normalize=True), "embed")
        return EmbedResponse(dim=self.dim, vectors=[[float(x) for x in v] for v in vectors])
