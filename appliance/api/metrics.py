"""``GET /api/v1/metrics``: the engine's counters in Prometheus text format (any valid token).

Token rates, time to first token, queue depth and KV use come from the engine over IPC; when
the engine cannot be reached the route answers 503 instead of stale numbers.
"""

from __future__ import annotations

from aiohttp import web

from appliance.api.app import ApiError
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Engine
from appliance.protocol.engine import ENGINE_METRICS, EngineMetrics

HELP = {
    "queue_depth": ("gauge", "generation requests waiting for a slot"),
    "active_streams": ("gauge", "generation streams decoding now"),
    "max_concurrency": ("gauge", "streams decoded together at most (resource.max_concurrency)"),
    "kv_cells_used": ("gauge", "KV cache cells held by streams and the cached system prompt"),
    "kv_cells_total": ("gauge", "KV cache cells of the loaded context"),
    "prompt_tokens_per_s": ("gauge", "prompt tokens read per second over recent decode steps"),
    "generation_tokens_per_s": ("gauge", "tokens generated per second over recent decode steps"),
    "ttft_ms_p50": ("gauge", "median time to first token of recent requests, ms"),
    "ttft_ms_p95": ("gauge", "95th percentile time to first token of recent requests, ms"),
    "requests_total": ("counter", "generation requests accepted"),
    "completed_total": ("counter", "generation requests finished"),
    "cancelled_total": ("counter", "generation streams cancelled by their client"),
    "rejected_busy_total": ("counter", "generation requests refused because the queue was full"),
    "prefix_cache_hits_total": ("counter", "requests that reused the cached system prompt"),
    "prompt_tokens_total": ("counter", "prompt tokens read"),
    "generated_tokens_total": ("counter", "tokens generated"),
    "embed_requests_total": ("counter", "embedding requests served"),
    "embed_texts_total": ("counter", "texts embedded"),
}


def prometheus(metrics: EngineMetrics) -> str:
    lines = []
    values = metrics.model_dump()
    for field, (kind, text) in HELP.items():
        name = f"appliance_engine_{field}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {values[field]}"]
    labels = f'chat_model="{metrics.chat_model}",embedding_model="{metrics.embedding_model}"'
    lines += ["# HELP appliance_engine_info the models the engine has loaded", "# TYPE appliance_engine_info gauge",
              f"appliance_engine_info{{{labels}}} 1"]
    return "\n".join(lines) + "\n"


class MetricsRoutes:
    def __init__(self, engine: IpcClient[Engine]) -> None:
        self.engine = engine

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/metrics", self.get_metrics)

    async def get_metrics(self, _: web.Request) -> web.Response:
        try:
            metrics = await self.engine.call(ENGINE_METRICS, timeout_s=3.0)
        except IpcError as exc:
            raise ApiError(503, "unavailable", f"engine metrics: {exc}") from None
        return web.Response(text=prometheus(metrics), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
