"""Entity commands: the site's entities (from Home Assistant discovery and devices that describe
themselves), one entity with its state, attributes and history, and commands by entity.

An entity is named by its id (``switch.hall_fan``) or, forgivingly, by its name: case, width,
spaces, dashes and underscores do not matter, a name in Chinese works as written, site.names adds
the names staff use, and "the office temperature" finds the office sensor's temperature by its
words. A name several entities fit as well is an error that lists them. Who may change an entity is
site.rules (the first rule whose pattern matches: its role, or read-only for the box; locks need an
admin by default); what an entity accepts is what it declared, checked by the mqtt service before it
publishes anything.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, JsonValue

from appliance.control.caller import Permission, role_allows
from appliance.control.command import Command, Context, Effect, HttpRoute, Tool, command
from appliance.control.errors import CommandError
from appliance.ipc.errors import IpcError
from appliance.phrases import Phrase
from appliance.protocol.common import Message
from appliance.protocol.site import (
    ENTITY_ID,
    MQTT_ENTITY_SET,
    STORE_ENTITIES,
    STORE_ENTITY,
    STORE_ENTITY_HISTORY,
    EntityKey,
    EntityPage,
    EntityQuery,
    EntityRow,
    EntitySet,
    History,
    HistoryQuery,
    SetResult,
)
from appliance.site.names import match

NAME = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$",
             description="an entity id (switch.hall_fan) or its name (Hall fan, hall_fan, 大厅风扇)")


class EntityName(Message):
    entity_id: str = NAME


class EntityDetailQuery(EntityName):
    history: int = Field(50, ge=0, le=10_000, description="state changes to include, newest first")
    since: float | None = Field(None, ge=0, le=1e11, description="only changes since (unix time)")


class EntityDetail(Message):
    entity: EntityRow
    history: History
    may_set: bool = Field(description="whether site.rules let the caller command it")


class EntitySetRequest(EntityName):
    action: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="one of the entity's actions")
    args: dict[str, JsonValue] = Field(default_factory=dict,
                                       description="value, brightness, color_temp, temperature, mode (per action)")
    wait_s: float | None = Field(None, ge=0, le=60, description="wait for the new state (default site.confirm_s)")


async def resolve(ctx: Context, name: str, action: str | None = None) -> EntityRow:
    """The entity ``name`` means (names.match: exact names and site.names first, then the closest
    words; ``action`` narrows to the entities that take it); 404 when none, 400 listing them when several."""
    if re.fullmatch(ENTITY_ID, name):
        try:
            return await ctx.peers.store.call(STORE_ENTITY, EntityKey(entity_id=name))
        except IpcError as exc:
            if exc.code != "not_found":
                raise
    page = await ctx.peers.store.call(STORE_ENTITIES, EntityQuery(limit=20_000))
    found = match(name, page.items, ctx.config.site.names, action)
    if not found:
        raise CommandError("not_found", Phrase("entity.no_such_name", name=name[:80]), field="entity_id")
    if len(found) > 1:
        listed = ", ".join(f"{row.entity_id} ({row.name})" for row in found[:10])
        raise CommandError("bad_request", Phrase("entity.ambiguous", name=name[:80], candidates=listed),
                           field="entity_id")
    return found[0]


def _may_set(ctx: Context, entity_id: str) -> str | None:
    """Why the caller may not command this entity (site.rules); None when they may."""
    rule = ctx.config.site.rule_for(entity_id)
    if rule is None:
        return None
    if rule.read_only:
        return f"{entity_id} is read-only for the box (site.rules: {rule.match})"
    if not role_allows(ctx.caller.role, Permission(rule.role)):
        return f"{entity_id} needs the {rule.role} role (site.rules: {rule.match})"
    return None


async def list_entities(ctx: Context, query: EntityQuery) -> EntityPage:
    return await ctx.peers.store.call(STORE_ENTITIES, query)


async def get(ctx: Context, query: EntityDetailQuery) -> EntityDetail:
    entity = await resolve(ctx, query.entity_id)
    history = await ctx.peers.store.call(STORE_ENTITY_HISTORY, HistoryQuery(
        entity_id=entity.entity_id, limit=query.history, since=query.since))
    return EntityDetail(entity=entity, history=history, may_set=_may_set(ctx, entity.entity_id) is None)


async def set_entity(ctx: Context, request: EntitySetRequest) -> SetResult:
    entity = await resolve(ctx, request.entity_id, request.action)
    if why := _may_set(ctx, entity.entity_id):
        raise CommandError("forbidden", why, field="entity_id")
    wait = request.wait_s if request.wait_s is not None else ctx.config.site.confirm_s
    return await ctx.peers.mqtt.call(MQTT_ENTITY_SET, EntitySet(
        entity_id=entity.entity_id, action=request.action, args=request.args, wait_s=wait,
        requested_by=ctx.caller.subject[:128]), timeout_s=wait + 15)


def _set_audit(request: EntitySetRequest, reply: SetResult | None) -> dict[str, Any]:
    done = {"entity": reply.entity_id, "outcome": reply.outcome, "reason": reply.reason[:200]} if reply else {}
    return {"entity_id": request.entity_id[:128], "action": request.action, "args": request.args, **done}


ONE = "/api/v1/entities/{entity_id}"
COMMANDS: tuple[Command[Any, Any], ...] = (
    command("entities.list", "The site's entities with their states: by component, area or words.", EntityQuery,
            EntityPage, Permission.VIEWER, list_entities, effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/entities"),), tags=("site",),
            tool=Tool("list_entities", "The site's devices and sensors with their current states.",
                      ("component", "area", "q"))),
    command("entities.get", "One entity: its state, attributes and history (by id or name).", EntityDetailQuery,
            EntityDetail, Permission.VIEWER, get, effect=Effect.READ, http=(HttpRoute("GET", ONE),), tags=("site",),
            tool=Tool("get_entity", "One device or sensor's state and recent history, by name or id.",
                      ("entity_id", "history"))),
    command("entities.set", "Command an entity (turn_on, set_value, lock...): published as Home Assistant would, "
            "then confirmed by its state.", EntitySetRequest, SetResult, Permission.OPERATOR, set_entity,
            effect=Effect.ACTUATE, http=(HttpRoute("POST", f"{ONE}/set"),), audit=_set_audit, tags=("site",),
            tool=Tool("set_entity", "Change a device: turn it on or off, set a value, lock or unlock, open or close.",
                      ("entity_id", "action", "args"))),
)
