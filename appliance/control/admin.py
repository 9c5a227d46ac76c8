"""Reading the box: status (services, model and plan, resources), the audit log, the config, models."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, JsonValue

from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, command
from appliance.control.errors import CommandError
from appliance.control.resources import Resources, sample
from appliance.control.system import HealthReport, all_health, overall
from appliance.ipc.errors import IpcError
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.gguf_info import ModelFileError
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Message
from appliance.protocol.engine import ENGINE_STATUS, EngineStatus
from appliance.protocol.store import (
    STORE_AUDIT_LIST,
    STORE_AUDIT_VERIFY,
    AuditPage,
    AuditQuery,
    AuditVerdict,
)

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Status(Message):
    health: HealthReport
    engine: EngineStatus | None = Field(None, description="absent while the engine cannot be reached")
    resources: Resources


class ConfigView(Message):
    values: dict[str, JsonValue] = Field(description="the effective configuration, secrets as asterisks")


class ModelRow(Message):
    name: str
    file: str
    kind: str
    size_bytes: int
    sha256: str
    source: str
    default: str = Field(description="chat or embedding when this is the model the engine loads")


class Models(Message):
    models: list[ModelRow]


class DefaultModel(Message):
    name: str = Field(pattern=MODEL_NAME)


class DefaultSet(Message):
    name: str
    kind: str
    detail: str


async def status(ctx: Context, _: Empty) -> Status:
    async def engine() -> EngineStatus | None:
        try:
            return await ctx.peers.engine.call(ENGINE_STATUS, timeout_s=3.0)
        except IpcError:
            return None

    services, engine_status, resources = await asyncio.gather(
        all_health(ctx), engine(), sample(ctx.config.paths.state_dir))
    from appliance import __version__

    return Status(health=HealthReport(status=overall(services), version=__version__, services=services),
                  engine=engine_status, resources=resources)


async def audit_list(ctx: Context, query: AuditQuery) -> AuditPage:
    return await ctx.peers.store.call(STORE_AUDIT_LIST, query)


async def audit_verify(ctx: Context, _: Empty) -> AuditVerdict:
    return await ctx.peers.store.call(STORE_AUDIT_VERIFY, timeout_s=300)


async def config_view(ctx: Context, _: Empty) -> ConfigView:
    return ConfigView(values=ctx.config.redacted())


def _catalog(ctx: Context) -> Catalog:
    return Catalog(ctx.config.paths.state_dir / "models")


async def models(ctx: Context, _: Empty) -> Models:
    try:
        rows = await asyncio.to_thread(_catalog(ctx).listing)
    except ModelFileError as exc:
        raise CommandError("unavailable", str(exc)) from None
    return Models(models=[ModelRow.model_validate({k: row.get(k, "") for k in ModelRow.model_fields}) for row in rows])


async def set_default(ctx: Context, request: DefaultModel) -> DefaultSet:
    catalog = _catalog(ctx)
    entry = (await asyncio.to_thread(catalog.entries)).get(request.name)
    if entry is None:
        raise CommandError("not_found", Phrase("model.not_imported", name=request.name), field="name")
    await asyncio.to_thread(catalog.make_default, entry)
    # A new embedding model makes vectors the file's old ones cannot be compared with: the store
    # re-embeds when it starts with the new one (store/vectormodel.py), so both restart together.
    restart = "appliance-engine appliance-store" if entry.kind == "embedding" else "appliance-engine"
    detail = "the engine loads it at its next start"
    if entry.kind == "embedding":
        detail += " (with engine.embedding_encoder: gguf); the store then re-embeds the memory"
    return DefaultSet(name=entry.name, kind=entry.kind, detail=f"{detail} (systemctl restart {restart})")


async def plan(ctx: Context, _: Empty) -> EngineStatus:
    try:
        return await ctx.peers.engine.call(ENGINE_STATUS, timeout_s=3.0)
    except IpcError as exc:
        raise CommandError.of(exc) from None


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("system.status", "Services, the model and its plan, and the box's CPU, memory, disk and temperatures.",
            Empty, Status, Permission.VIEWER, status, http=(HttpRoute("GET", "/api/v1/status"),), tags=("system",),
            effect=Effect.READ),
    command("system.config", "The effective configuration, secrets redacted (no writes over the network).", Empty,
            ConfigView, Permission.ADMIN, config_view, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/config"),),
            tags=("system",)),
    command("audit.list", "The audit log, newest first, filtered by time, user and action.", AuditQuery, AuditPage,
            Permission.ADMIN, audit_list, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/audit"),),
            tags=("audit",)),
    command("audit.verify", "Check the audit log's hash chain; names the first bad row.", Empty, AuditVerdict,
            Permission.ADMIN, audit_verify, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/audit/verify"),),
            tags=("audit",)),
    command("models.list", "Models on this box: kind, size, sha256, and which are the defaults.", Empty, Models,
            Permission.VIEWER, models, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/models"),),
            tags=("models",)),
    command("models.set_default", "Make an imported model the one the engine loads (at its next start).",
            DefaultModel, DefaultSet, Permission.ADMIN, set_default, effect=Effect.WRITE,
            http=(HttpRoute("PUT", "/api/v1/models/default"),), tags=("models",),
            audit=lambda request, _reply: {"name": request.name}),
    command("models.plan", "The engine's plan for its chat model on this box, with the reasons.", Empty,
            EngineStatus, Permission.VIEWER, plan, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/models/plan"),),
            tags=("models",)),
)
