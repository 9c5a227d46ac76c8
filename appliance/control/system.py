"""System commands: health (public summary or full report) and every service's metrics."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from typing import Any, Literal

from pydantic import Field

from appliance import __version__
from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, Tool, command
from appliance.control.update import UpdateStatus, status_of, update_folder
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import (
    HEALTH,
    SAMPLES,
    Empty,
    Message,
    MetricFamily,
    ServiceHealth,
    ServiceName,
    ServiceState,
)
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
    """The full report, for a valid token: every service's health with its detail, and on the image
    the update state (slot, version, an install in progress, the last boot's verdict)."""

    status: Overall
    version: str
    services: list[ServiceHealth]
    update: UpdateStatus | None = None


async def _service_health(ctx: Context, name: ServiceName) -> ServiceHealth:
    try:
        return await ctx.peers.client(name).call(HEALTH, timeout_s=PEER_HEALTH_TIMEOUT_S)
    except IpcError as exc:
        return ServiceHealth(name=name, state=ServiceState.DOWN, version="", uptime_s=0.0,
                             detail_phrases=[]).extended(Phrase("service.unreachable", why=str(exc)))


# Every service's health, read at most once per HEALTH_FRESH_S per process: under load, health and
# status requests share one read instead of each asking five services (bench/results/api-vm.md).
HEALTH_FRESH_S = 0.5
_reads: weakref.WeakKeyDictionary[object, tuple[float, asyncio.Task[list[ServiceHealth]]]] = (
    weakref.WeakKeyDictionary())


async def _read_all(ctx: Context) -> list[ServiceHealth]:
    return list(await asyncio.gather(*(_service_health(ctx, n) for n in SERVICE_NAMES)))


async def all_health(ctx: Context) -> list[ServiceHealth]:
    """The services' health as of at most HEALTH_FRESH_S ago; callers that arrive meanwhile share the read."""
    now = time.monotonic()
    cached = _reads.get(ctx.peers)
    if cached is None or now - cached[0] > HEALTH_FRESH_S or cached[1].get_loop() is not asyncio.get_running_loop():
        cached = (now, asyncio.create_task(_read_all(ctx)))
        _reads[ctx.peers] = cached
    return list(await asyncio.shield(cached[1]))


def overall(services: list[ServiceHealth]) -> Overall:
    return "ready" if all(s.state is ServiceState.READY for s in services) else "degraded"


async def health(ctx: Context, _: Empty) -> HealthSummary | HealthReport:
    services = await all_health(ctx)
    if ctx.caller.role is None:
        return HealthSummary(status=overall(services), services={s.name: s.state for s in services})
    return HealthReport(status=overall(services), version=__version__, services=services,
                        update=await _update(ctx))


async def _update(ctx: Context) -> UpdateStatus | None:
    """Only on the image (its loader entry names the slot): a development box has nothing to report."""
    if not os.environ.get("APPLIANCE_SLOT"):
        return None
    return await asyncio.to_thread(status_of, update_folder(ctx.config.paths.state_dir))


async def health_report(ctx: Context, body: TokenInBody) -> HealthReport:
    """The reference design's form: the token in the body instead of the Authorization header."""
    ctx.accounts.caller(body.token, ctx.caller.via, ctx.caller.ip)  # refuses a bad token
    services = await all_health(ctx)
    return HealthReport(status=overall(services), version=__version__, services=services, update=await _update(ctx))


class MetricsReport(Message):
    up: dict[ServiceName, bool]
    services: dict[ServiceName, list[MetricFamily]]


async def metrics(ctx: Context, _: Empty) -> MetricsReport:
    async def one(name: ServiceName) -> list[MetricFamily] | None:
        try:
            return (await ctx.peers.client(name).call(SAMPLES, timeout_s=3.0)).families
        except IpcError:
            return None

    gathered = await asyncio.gather(*(one(n) for n in SERVICE_NAMES))
    return MetricsReport(up={n: f is not None for n, f in zip(SERVICE_NAMES, gathered, strict=True)},
                         services={n: f for n, f in zip(SERVICE_NAMES, gathered, strict=True) if f is not None})


def prometheus(report: MetricsReport) -> str:
    """Every service's metrics in Prometheus text format, each series labelled with its service."""
    lines = ["# HELP appliance_up whether the service answered the api just now (1) or not (0)",
             "# TYPE appliance_up gauge"]
    lines += [f'appliance_up{{service="{name}"}} {int(up)}' for name, up in report.up.items()]
    seen: set[str] = set()
    for service, families in report.services.items():
        for family in families:
            if family.name not in seen:
                seen.add(family.name)
                lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
            for sample in family.samples:
                labels = {"service": service, **sample.labels}
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                lines.append(f"{family.name}{sample.suffix}{{{text}}} {sample.value:g}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("system.health", "Every service's state: a summary for anyone, the full report with a token.",
            Empty, HealthSummary | HealthReport, Permission.PUBLIC, health, effect=Effect.READ,  # type: ignore[arg-type]
            http=(HttpRoute("GET", "/api/v1/health"),),
            tool=Tool("box_health", "Whether the box's services are running, and why not.")),
    command("system.health_report", "The full health report for the token in the body (the reference form).",
            TokenInBody, HealthReport, Permission.PUBLIC, health_report, effect=Effect.READ,
            http=(HttpRoute("POST", "/api/v1/health"),)),
    command("system.metrics", "Every service's metrics (Prometheus text over REST).", Empty, MetricsReport,
            Permission.VIEWER, metrics, effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/metrics", render="prometheus"),)),
)
