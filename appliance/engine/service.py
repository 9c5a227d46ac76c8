"""The engine service: probe the box, plan, load the models, then serve generate/embed/metrics.

A missing, corrupt or oversized model never takes the engine down: it stays up, reports
`degraded` with the reason ("no chat model: ..."), and answers the affected calls with
`unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Iterator

import llama_cpp

from appliance.config import ApplianceConfig
from appliance.engine.chat import ChatEngine
from appliance.engine.embedder import EmbeddingModel
from appliance.engine.encoders import ENCODER_RESERVE_BYTES, PackagedEncoder, encoder_threads
from appliance.engine.errors import EngineBusy, EngineError, RequestRefused
from appliance.engine.metrics import EngineCounters, families
from appliance.engine.plan import cpu_repack, embedding_reserve, plan_for_config
from appliance.engine.probe import Hardware, probe
from appliance.ipc.errors import BadRequest, Busy, IpcError, Unavailable
from appliance.ipc.server import IpcServer
from appliance.modelfiles.gguf_info import ModelFileError, ModelInfo, read_model_info
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Engine, MetricFamily, ServiceState
from appliance.protocol.engine import (
    ENGINE_EMBED,
    ENGINE_GENERATE,
    ENGINE_METRICS,
    ENGINE_STATUS,
    EmbedRequest,
    EmbedResponse,
    EngineMetrics,
    EngineStatus,
    GenerateChunk,
    GenerateRequest,
)
from appliance.runtime.notify import extending_start_timeout
from appliance.runtime.service import Service

log = logging.getLogger("appliance.engine")


@contextlib.contextmanager
def engine_errors_as_ipc() -> Iterator[None]:
    """The one place engine errors become IPC errors (their wire codes and statuses)."""
    try:
        yield
    except EngineBusy as exc:
        raise Busy(str(exc), exc.retry_after_s) from None
    except RequestRefused as exc:
        raise BadRequest(str(exc)) from None
    except EngineError as exc:
        raise IpcError(str(exc)) from None


class EngineService(Service[Engine]):
    name = "engine"

    chat: ChatEngine | None = None
    embedder: EmbeddingModel | PackagedEncoder | None = None

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self.counters = EngineCounters()
        self.problems: list[Phrase] = []
        self.hardware: Hardware | None = None

    def register(self, ipc: IpcServer[Engine]) -> None:
        ipc.add_stream(ENGINE_GENERATE, self.generate)
        ipc.add(ENGINE_EMBED, self.embed)
        ipc.add(ENGINE_METRICS, self.engine_metrics)
        ipc.add(ENGINE_STATUS, self.status)

    async def start(self) -> None:
        problems = self.problems
        async with extending_start_timeout():
            embed_info = await self._load_embedder(problems)
            reserve = embedding_reserve(embed_info) if embed_info is not None else ENCODER_RESERVE_BYTES
            await self._load_chat(problems, reserve if self.embedder is not None else 0)
        if self.embedder is not None and self.embedder.dim != self.config.memory.vector_dim:
            problems.append(Phrase("engine.dim_mismatch", dim=self.embedder.dim,
                                   configured=self.config.memory.vector_dim))
        if problems:
            self.set_state(ServiceState.DEGRADED, *problems)
        elif self.chat is not None:
            plan = self.chat.plan
            self.set_state(ServiceState.READY, Phrase(
                "engine.ready", model=self.config.chat_model_path.name, n_ctx=plan.n_ctx,
                gpu_layers=plan.n_gpu_layers, kv=plan.kv_type, threads=plan.n_threads))

    async def _load_embedder(self, problems: list[Phrase]) -> ModelInfo | None:
        encoder = self.config.engine.embedding_encoder
        if encoder != "gguf":
            self.set_state(self.state, Phrase("engine.loading_encoder", encoder=encoder))
            try:
                self.embedder = await PackagedEncoder.load(encoder, counters=self.counters,
                                                           n_threads=encoder_threads(self.config.engine.n_threads))
            except EngineError as exc:
                problems.append(Phrase("engine.no_embedding_model", why=str(exc)))
            return None
        path = self.config.embedding_model_path
        self.set_state(self.state, Phrase("engine.loading_embedding_model", path=str(path)))
        try:
            info = await asyncio.to_thread(read_model_info, path)
            layers = 999 if self.config.resource.gpu_enabled and llama_cpp.llama_supports_gpu_offload() else 0
            threads = self.config.engine.n_threads or len(os.sched_getaffinity(0))
            # The chat model's rule for repacked CPU weights (plan.cpu_repack): only the CPU's flags matter.
            cpu = await asyncio.to_thread(probe, use_nvidia_smi=False)
            repack, _ = cpu_repack(cpu, self.config.engine.cpu_repack)
            self.embedder = await EmbeddingModel.load(path, n_threads=threads, n_gpu_layers=layers,
                                                      counters=self.counters, cpu_repack=repack)
            return info
        except ModelFileError as exc:
            problems.append(Phrase("engine.no_embedding_model", why=str(exc)))
            return None

    async def _load_chat(self, problems: list[Phrase], reserved: int) -> None:
        path = self.config.chat_model_path
        self.set_state(self.state, Phrase("engine.planning_chat_model", path=str(path)))
        try:
            info = await asyncio.to_thread(read_model_info, path)
        except ModelFileError as exc:
            problems.append(Phrase("engine.no_chat_model", why=str(exc)))
            return
        hardware = self.hardware = await asyncio.to_thread(probe)  # may run nvidia-smi
        plan = plan_for_config(self.config, hardware, info, other_ram_bytes=reserved,
                               gpu_available=llama_cpp.llama_supports_gpu_offload())
        for line in plan.why:
            log.info("plan: %s", line, extra={"MODEL": path.name})
        if not plan.fits:
            problems.append(Phrase("engine.chat_model_does_not_fit", model=path.name, why=plan.why[-1]))
            return
        self.set_state(self.state, Phrase("engine.loading_chat_model", path=str(path), n_ctx=plan.n_ctx,
                                          gpu_layers=plan.n_gpu_layers))
        try:
            self.chat = await ChatEngine.load(path, plan, n_slots=self.config.resource.max_concurrency,
                                              max_queue=self.config.resource.max_queue, counters=self.counters)
        except ModelFileError as exc:
            problems.append(Phrase("engine.no_chat_model", why=str(exc)))

    async def stop(self) -> None:
        if self.chat is not None:
            self.chat.close()
            self.chat = None
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateChunk, None]:
        if self.chat is None:
            raise Unavailable(Phrase("engine.chat_unavailable"))
        # aclosing: a client that leaves closes every layer down to the batcher at once, which
        # sets the job's cancel flag before this generator's close returns (not when the
        # garbage collector gets round to the inner generators).
        with engine_errors_as_ipc():
            async with contextlib.aclosing(self.chat.generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def _embedding_name(self) -> str:
        encoder = self.config.engine.embedding_encoder
        return self.config.embedding_model_path.name if encoder == "gguf" else encoder

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        if self.embedder is None:
            raise Unavailable(Phrase("engine.embed_unavailable"))
        with engine_errors_as_ipc():
            return await self.embedder.embed(request.texts)

    async def status(self, _: Empty) -> EngineStatus:
        return EngineStatus(
            chat_model=self.config.chat_model_path.name if self.chat else "",
            embedding_model=self._embedding_name() if self.embedder else "",
            plan=self.chat.plan.as_dict() if self.chat else None,
            hardware=self.hardware.as_dict() if self.hardware else {},
            gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
            problems=[str(problem) for problem in self.problems])

    async def collect_metrics(self) -> list[MetricFamily]:
        return families(await self.engine_metrics(Empty()))

    async def engine_metrics(self, _: Empty) -> EngineMetrics:
        c = self.counters
        prompt_rate, gen_rate = c.rates()
        p50, p95 = c.ttft_ms()
        waiting = active = used = total = 0
        if self.chat is not None:
            waiting, active, used = self.chat.batcher.snapshot()
            total = self.chat.ctx.n_ctx
        return EngineMetrics(
            chat_model=self.config.chat_model_path.name if self.chat else "",
            embedding_model=self._embedding_name() if self.embedder else "",
            max_concurrency=self.config.resource.max_concurrency, queue_depth=waiting, active_streams=active,
            kv_cells_used=used, kv_cells_total=total, requests_total=c.requests, completed_total=c.completed,
            cancelled_total=c.cancelled, rejected_busy_total=c.rejected, prefix_cache_hits_total=c.prefix_hits,
            prompt_tokens_total=c.prompt_tokens, generated_tokens_total=c.generated_tokens,
            prompt_tokens_per_s=round(prompt_rate, 1), generation_tokens_per_s=round(gen_rate, 1),
            ttft_ms_p50=round(p50, 2), ttft_ms_p95=round(p95, 2), embed_requests_total=c.embed_requests,
            embed_texts_total=c.embed_texts, embed_skipped_late_total=c.embed_skipped_late)
