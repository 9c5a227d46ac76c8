"""System commands: health (public summary or full report) and the engine's metrics."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from appliance import __version__
from appliance.control.caller import Permission
from appliance.control.command import Command, Context, HttpRoute, command
from appliance.control.errors import CommandError
from appliance.ipc.errors import IpcError
from appliance.protocol.common import HEALTH, Empty, Message, ServiceHealth, ServiceName, ServiceState
from appliance.protocol.engine import ENGINE_METRICS, EngineMetrics
from appliance.protocol.services import SERVICE_NAMES

PEER_HEALTH_TIMEOUT_S = 2.0
MAX_TOKEN_CHARS = 8192
Overall = Literal["ready", "degraded"]


class TokenInBody(Message):
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="an access token")


class HealthSummary(Message):
    """What anyone may know: the overall state and each service's state."""

    status: Overall
    services: dict[ServiceName, ServiceState]


class HealthReport(Message):
    """The full report, for a valid token: every service's health with its detail."""

    status: Overall
    version: str
    services: list[ServiceHealth]


async def _service_health(ctx: Context, name: ServiceName) -> ServiceHealth:
    try:
        return await ctx.peers.client(name).call(HEALTH, timeout_s=PEER_HEALTH_TIMEOUT_S)
    except IpcError as exc:
        return ServiceHealth(name=name, state=ServiceState.DOWN, version="", uptime_s=0.0, detail=str(exc))


async def all_health(ctx: Context) -> list[ServiceHealth]:
    return list(await asyncio.gather(*(_service_health(ctx, n) for n in SERVICE_NAMES)))


def overall(services: list[ServiceHealth]) -> Overall:
    return "ready" if all(s.state is ServiceState.READY for s in services) else "degraded"


async def health(ctx: Context, _: Empty) -> HealthSummary | HealthReport:
    services = await all_health(ctx)
    if ctx.caller.role is None:
        return HealthSummary(status=overall(services), services={s.name: s.state for s in services})
    return HealthReport(status=overall(services), version=__version__, services=services)


async def health_report(ctx: Context, body: TokenInBody) -> HealthReport:
    """The reference design's form: the token in the body instead of the Authorization header."""
    if ctx.authenticate is None:
        raise CommandError("bad_request", "this surface takes no token in the request", field="token")
    await ctx.authenticate(body.token)
    services = await all_health(ctx)
    return HealthReport(status=overall(services), version=__version__, services=services)


async def metrics(ctx: Context, _: Empty) -> EngineMetrics:
    try:
        return await ctx.peers.engine.call(ENGINE_METRICS, timeout_s=3.0)
    except IpcError as exc:
        raise CommandError("unavailable", f"engine metrics: {exc}") from None


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
    """The engine's metrics in Prometheus text format (what REST serves for system.metrics)."""
    lines = []
    values = metrics.model_dump()
    for field, (kind, text) in HELP.items():
        name = f"appliance_engine_{field}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {values[field]}"]
    labels = f'chat_model="{metrics.chat_model}",embedding_model="{metrics.embedding_model}"'
    lines += ["# HELP appliance_engine_info the models the engine has loaded", "# TYPE appliance_engine_info gauge",
              f"appliance_engine_info{{{labels}}} 1"]
    return "\n".join(lines) + "\n"


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("system.health", "Every service's state: a summary for anyone, the full report with a token.",
            Empty, HealthSummary | HealthReport, Permission.PUBLIC, health,  # type: ignore[arg-type]
            http=(HttpRoute("GET", "/api/v1/health"),)),
    command("system.health_report", "The full health report for the token in the body (the reference form).",
            TokenInBody, HealthReport, Permission.PUBLIC, health_report,
            http=(HttpRoute("POST", "/api/v1/health"),)),
    command("system.metrics", "The engine's counters (Prometheus text over REST).", Empty, EngineMetrics,
            Permission.VIEWER, metrics, http=(HttpRoute("GET", "/api/v1/metrics", render="prometheus"),)),
)
