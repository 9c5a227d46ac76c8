"""The site as the box sees it: entities learned from Home Assistant MQTT discovery (and devices of
our own convention that describe themselves), their states and history, and commands by entity.

The mqtt service reads discovery and states (appliance/site/ holds the rules) and writes them to
the store, which keeps the registry, each entity's current state and its history; entities.set
goes to the mqtt service, which publishes exactly what Home Assistant would and waits for the
device to confirm the new state.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from appliance.protocol.common import Changed, Message, endpoint

ENTITY_ID = r"^[a-z_]+\.[a-z0-9_]{1,128}$"
ACTIONS = ("turn_on", "turn_off", "toggle", "set_value", "press", "lock", "unlock", "open", "close", "stop",
           "set_temperature", "set_mode")
Outcome = Literal["confirmed", "unconfirmed", "refused"]


class EntityConfig(Message):
    """An entity as announced: where it came from, what it is, and its normalized config."""

    entity_id: str = Field(pattern=ENTITY_ID)
    key: str = Field(min_length=1, max_length=600, description="the discovery topic (#component for device-based)")
    component: str = Field(max_length=32)
    name: str = Field(max_length=256, description="the friendly name")
    area: str | None = Field(None, max_length=128)
    device_id: str = Field("", max_length=256, description="the device's first identifier")
    device: dict[str, JsonValue] = Field(default_factory=dict)
    origin: str = Field("", max_length=64, description="the bridge that announced it (Zigbee2MQTT, ESPHome...)")
    config: dict[str, JsonValue]
    actions: list[str] = Field(default_factory=list, description="what entities.set takes for it")
    problem: str = Field("", max_length=2000, description="templates this box will not run, and why")


class EntityRow(EntityConfig):
    state: str | None = None
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    state_at: float | None = None
    available: bool | None = Field(None, description="null while nothing says either way")
    state_problem: str = Field("", max_length=2000, description="why the last payload was kept raw")
    updated_at: float


class EntityPut(Message):
    """Entities announced (upserted) and keys whose announcement was withdrawn (removed)."""

    put: list[EntityConfig] = Field(default_factory=list, max_length=10_000)
    removed: list[str] = Field(default_factory=list, max_length=10_000)


class StateIn(Message):
    """A state read from a payload: the new state and attributes (merged into what the entity has)."""

    entity_id: str = Field(pattern=ENTITY_ID)
    state: str | None = Field(None, max_length=4096, description="none: this payload did not carry the state")
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    available: bool | None = None
    problem: str = Field("", max_length=2000)
    raw: str = Field("", max_length=4096, description="the payload as received, when kept raw")
    at: float


class StateBatch(Message):
    states: list[StateIn] = Field(min_length=1, max_length=10_000)


class StatesStored(Message):
    changed: list[EntityRow] = Field(description="entities whose state, attributes or availability changed")


class EntityQuery(Message):
    component: str | None = Field(None, max_length=32)
    area: str | None = Field(None, max_length=128)
    q: str | None = Field(None, min_length=1, max_length=256, description="words in the id, name or area")
    limit: int = Field(500, ge=1, le=20_000)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the page before")


class EntityPage(Message):
    items: list[EntityRow]
    next_cursor: str | None = None


class EntityKey(Message):
    entity_id: str = Field(pattern=ENTITY_ID)


class HistoryQuery(EntityKey):
    limit: int = Field(50, ge=0, le=10_000)
    since: float | None = Field(None, ge=0, le=1e11)


class HistoryRow(Message):
    at: float
    state: str | None
    attributes: dict[str, JsonValue] = Field(default_factory=dict)


class History(Message):
    items: list[HistoryRow] = Field(description="newest first")


class EntitySet(Message):
    entity_id: str = Field(pattern=ENTITY_ID)
    action: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$",
                        description="turn_on, turn_off, toggle, set_value, press, lock, unlock, open, close, stop, "
                                    "set_temperature, set_mode (what the entity's actions list says)")
    args: dict[str, JsonValue] = Field(default_factory=dict, description="value, brightness, color_temp, "
                                                                         "temperature, mode, position, percentage")
    wait_s: float = Field(5.0, ge=0, le=60, description="how long to wait for the device to confirm; 0: do not")
    requested_by: str = Field("", max_length=128)


class SetResult(Message):
    entity_id: str
    action: str
    outcome: Outcome
    reason: str = Field("", description="why it was refused, or what was seen instead of the new state")
    published: list[dict[str, JsonValue]] = Field(default_factory=list, description="topic and payload of each "
                                                                                   "message sent")
    state: str | None = None
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    latency_ms: float | None = None


STORE_ENTITY_PUT = endpoint("store", "site/put", EntityPut, Changed)
STORE_ENTITY_STATES = endpoint("store", "site/states", StateBatch, StatesStored)
STORE_ENTITIES = endpoint("store", "site/entities", EntityQuery, EntityPage)
STORE_ENTITY = endpoint("store", "site/entity", EntityKey, EntityRow)
STORE_ENTITY_HISTORY = endpoint("store", "site/history", HistoryQuery, History)
MQTT_ENTITY_SET = endpoint("mqtt", "site/set", EntitySet, SetResult)
# The api's: entity changes pushed as they are committed, to the /control "entities" topic.
API_ENTITIES_CHANGED = endpoint("api", "site/changed", StatesStored, Changed)
