"""The site bridge: Home Assistant discovery and entity states in, commands by entity out.

Everything it reads goes through the ingest's batches (mqtt/ingest.py), so a discovery config or
a state payload is acknowledged to the broker only once the store has committed what it meant,
in the order the broker sent it. The registry is held here too (loaded from the store at start)
so that a state payload is routed to its entities at once and a command can be checked and
confirmed without asking the store.

- Discovery (``<prefix>/#``): appliance/site/discovery.py reads a config; a refused one goes to
  the quarantine with its reason (kind discovery), the rest of the site unaffected. Each entity
  gets its id and its topics; new state topics are subscribed in batches. A bridge may announce
  at most site.max_per_source entities, the box keeps at most site.max_entities.
- Devices of the box's own convention describe themselves retained on ``devices/<id>/meta``:
  they become ``device.<id>`` entities whose actions are the commands they declare.
- States: a payload on an entity's topic is read by its templates (appliance/site/entities.py).
- Commands (entities.set): checked against what the entity declares (appliance/site/changes.py),
  published exactly as Home Assistant would, then confirmed when the state the device reports shows
  the change within wait_s (confirmed), or not (unconfirmed); refused before anything is published
  otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema

from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.mqtt.link import Incoming, LinkDown, MqttLink
from appliance.phrases import Phrase
from appliance.protocol.common import Api, Store
from appliance.protocol.devices import CommandResult, DeviceCommand
from appliance.protocol.site import (
    API_ENTITIES_CHANGED,
    STORE_ENTITIES,
    EntityConfig,
    EntityQuery,
    EntityRow,
    EntitySet,
    SetResult,
    StateIn,
    StatesStored,
)
from appliance.protocol.topics import topic_filter
from appliance.site import changes, discovery, entities, names
from appliance.site.discovery import Announced, DiscoveryRefused

SUBSCRIBE_CHUNK = 200
MAX_META_BYTES = 16 * 1024


class SiteBridge:
    def __init__(self, config: ApplianceConfig, store: IpcClient[Store], api: IpcClient[Api], own_topics: list[str],
                 send_command: Callable[[DeviceCommand], Awaitable[CommandResult]], log: logging.Logger) -> None:
        self.site = config.site
        self.prefix = self.site.discovery_prefix
        self.store, self.api, self.log = store, api, log
        self.send_command = send_command
        self.own_topics = set(own_topics)  # the box's own discovery messages: not devices
        self.forbidden = ("appliance",)  # no command to the box's own topics
        self.meta = topic_filter((self.site.meta_topic,))
        self.entities: dict[str, EntityRow] = {}
        self.by_key: dict[str, str] = {}
        self.routes: dict[str, list[str]] = {}
        self.subscribed: set[str] = set()
        self.to_subscribe: set[str] = set()
        self.wanted = asyncio.Event()
        self.changed = asyncio.Condition()
        self.refused = 0
        self.link: MqttLink | None = None
        self._pushes: set[asyncio.Task[None]] = set()

    # --- the registry ---------------------------------------------------------------------------

    async def load(self) -> None:
        """The registry as the store has it (before the broker redelivers anything)."""
        cursor = None
        while True:
            page = await self.store.call(STORE_ENTITIES, EntityQuery(limit=20_000, cursor=cursor))
            for row in page.items:
                self._keep(row)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _keep(self, row: EntityRow) -> None:
        old = self.entities.get(row.entity_id)
        if old is not None:
            self._unroute(old)
        self.entities[row.entity_id] = row
        self.by_key[row.key] = row.entity_id
        for topic in entities.topics_of(row.config):
            self.routes.setdefault(topic, []).append(row.entity_id)
            if topic not in self.subscribed:
                self.to_subscribe.add(topic)
        if self.to_subscribe:
            self.wanted.set()

    def _unroute(self, row: EntityRow) -> None:
        for topic in entities.topics_of(row.config):
            ids = self.routes.get(topic, [])
            if row.entity_id in ids:
                ids.remove(row.entity_id)
            if not ids:
                self.routes.pop(topic, None)

    def _drop(self, key: str) -> str | None:
        entity_id = self.by_key.pop(key, None)
        row = self.entities.pop(entity_id, None) if entity_id else None
        if row is not None:
            self._unroute(row)
        return entity_id

    def filters(self) -> list[str]:
        """What a new connection subscribes: discovery, self-descriptions, every known state topic."""
        self.subscribed = set(self.routes)
        self.to_subscribe.clear()
        return [f"{self.prefix}/#", self.site.meta_topic, *sorted(self.routes)]

    def handles(self, topic: str) -> bool:
        return topic.startswith(self.prefix + "/") or bool(self.meta.fullmatch(topic)) or topic in self.routes

    def summary(self) -> Phrase:
        offline = sum(row.available is False for row in self.entities.values())
        return Phrase("site.summary", entities=len(self.entities), offline=offline, refused=self.refused)

    # --- what comes in --------------------------------------------------------------------------

    def offer(self, message: Incoming, ingest: Any) -> None:
        topic = message.topic
        try:
            if topic.startswith(self.prefix + "/"):
                if topic in self.own_topics or topic.endswith("/status"):
                    message.ack()  # the box's own announcement, or Home Assistant's birth message
                    return
                self._discovery(message, ingest)
            elif self.meta.fullmatch(topic):
                self._meta(message, ingest)
            else:
                ingest.offer_states(message, self._states(topic, message.payload))
        except DiscoveryRefused as exc:
            self.refused += 1
            self.log.info("discovery on %s refused: %s", topic[:200], exc)
            ingest.quarantine(message, "discovery", str(exc))

    def _source(self, announced: Announced) -> str:
        if announced.origin:
            return announced.origin
        topic = next((v for k, v in announced.config.items() if k.endswith("_topic") and isinstance(v, str)), "")
        return topic.split("/")[0] or "?"

    def _discovery(self, message: Incoming, ingest: Any) -> None:
        found = discovery.parse(self.prefix, message.topic, message.payload, forbidden=self.forbidden)
        keys = {announced.key for announced in found.entities}
        stale = [key for key in list(self.by_key) if (key == found.topic or key.startswith(found.topic + "#"))
                 and key not in keys]
        removed = [key for key in stale if self._drop(key)]
        per_source = Counter(self._source_of(row) for row in self.entities.values())
        puts = []
        for announced in found.entities:
            source = self._source(announced)
            new = announced.key not in self.by_key
            if new and len(self.entities) >= self.site.max_entities:
                raise DiscoveryRefused(f"the box keeps at most {self.site.max_entities} entities (site.max_entities)")
            if new and per_source[source] >= self.site.max_per_source:
                raise DiscoveryRefused(f"{source!r} announced {per_source[source]} entities already; at most "
                                       f"{self.site.max_per_source} (site.max_per_source)")
            per_source[source] += int(new)
            made = entities.register(announced, self._holder, self.site.areas)
            puts.append(made)
            self._replace(made)
        ingest.offer_site(message, puts, removed)

    def _source_of(self, row: EntityRow) -> str:
        return row.origin or next((v for k, v in row.config.items() if k.endswith("_topic") and isinstance(v, str)),
                                  "?").split("/")[0]

    def _holder(self, entity_id: str) -> str | None:
        row = self.entities.get(entity_id)
        return row.key if row is not None else None

    def _replace(self, made: EntityConfig) -> None:
        old_id = self.by_key.get(made.key)
        old = self.entities.get(old_id) if old_id else None
        if old_id and old_id != made.entity_id:
            self._drop(made.key)
        row = EntityRow(**made.model_dump(), updated_at=time.time(),
                        **({"state": old.state, "attributes": old.attributes, "state_at": old.state_at,
                            "available": old.available} if old is not None and old_id == made.entity_id else {}))
        self._keep(row)

    def _meta(self, message: Incoming, ingest: Any) -> None:
        """A device of the box's own convention describing itself: name, area, description, commands."""
        device = message.topic.split("/")[1]
        key = message.topic
        if not message.payload.strip():
            ingest.offer_site(message, [], [key] if self._drop(key) else [])
            return
        if len(message.payload) > MAX_META_BYTES:
            raise DiscoveryRefused(f"a meta message of {len(message.payload)} bytes; at most {MAX_META_BYTES}")
        try:
            body = json.loads(message.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DiscoveryRefused(f"meta: not UTF-8 JSON: {str(exc)[:100]}") from None
        if not isinstance(body, dict):
            raise DiscoveryRefused("meta: a JSON object")
        commands = body.get("commands") or {}
        if not isinstance(commands, dict) or len(commands) > 64:
            raise DiscoveryRefused("meta.commands: an object of at most 64 commands")
        for name, spec in commands.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
                raise DiscoveryRefused(f"meta.commands: {str(name)[:40]!r} is not a command name")
            schema = spec.get("args_schema", {"type": "object"}) if isinstance(spec, dict) else {"type": "object"}
            if not isinstance(schema, dict):
                raise DiscoveryRefused(f"meta.commands.{name}.args_schema: a JSON schema object")
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise DiscoveryRefused(f"meta.commands.{name}.args_schema: {exc.message[:200]}") from None
        for field in ("name", "area", "description"):
            if field in body and not (isinstance(body[field], str) and len(body[field]) <= 256):
                raise DiscoveryRefused(f"meta.{field}: a text of at most 256 characters")
        name = body.get("name") or device
        made = EntityConfig(entity_id=f"device.{names.slug(device) or 'device'}", key=key, component="device",
                            name=name, area=self.site.areas.get(f"device.{names.slug(device)}") or body.get("area"),
                            device_id=device, device={"name": name, "identifiers": [device]}, origin="devices",
                            config={"device_id": device, "description": body.get("description", ""),
                                    "commands": commands}, actions=sorted(commands))
        self._replace(made)
        ingest.offer_site(message, [made], [])

    def _states(self, topic: str, payload: bytes) -> list[StateIn]:
        now = time.time()
        found = []
        for entity_id in self.routes.get(topic, []):
            row = self.entities[entity_id]
            roles = entities.topics_of(row.config).get(topic, [])
            reading = entities.read(row.component, row.config, roles, payload)
            found.append(StateIn(entity_id=entity_id, state=reading.state, attributes=reading.attributes,
                                 available=reading.available, problem=reading.problem, raw=reading.raw, at=now))
        return found

    async def committed(self, changed: StatesStored) -> None:
        """The store committed these rows: the registry follows, waiting commands look, the api is told."""
        for row in changed.changed:
            if row.entity_id in self.entities:
                self.entities[row.entity_id] = row
        async with self.changed:
            self.changed.notify_all()
        if changed.changed:
            task = asyncio.create_task(self._push(changed))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

    async def announced(self, puts: list[EntityConfig], removed: list[str]) -> None:
        """Entities committed as announced: the live view gets them whole (their states as last known)."""
        rows = [self.entities[made.entity_id] for made in puts if made.entity_id in self.entities]
        if rows:
            await self.committed(StatesStored(changed=rows))

    async def _push(self, changed: StatesStored) -> None:
        with contextlib.suppress(IpcError):  # nobody is watching, or the api is restarting: the store has it
            await self.api.call(API_ENTITIES_CHANGED, changed, timeout_s=5.0)

    async def subscriber(self) -> None:
        """Subscribe new state topics in batches, as discovery announces them."""
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            while self.to_subscribe and self.link is not None and not self.link.lost.is_set():
                batch = sorted(self.to_subscribe)[:SUBSCRIBE_CHUNK]
                try:
                    await self.link.subscribe(batch)
                except (LinkDown, TimeoutError) as exc:
                    self.log.info("state topics not subscribed yet (%s); on the next connection", exc)
                    break
                self.to_subscribe.difference_update(batch)
                self.subscribed.update(batch)

    # --- commands out ---------------------------------------------------------------------------

    async def set(self, request: EntitySet) -> SetResult:
        row = self.entities.get(request.entity_id)
        if row is None:
            return SetResult(entity_id=request.entity_id, action=request.action, outcome="refused",
                             reason=f"no entity {request.entity_id!r} on this box")
        if row.component == "device":
            return await self._device_command(row, request)
        try:
            planned = changes.plan(row, request.action, dict(request.args))
        except entities.Refusal as exc:
            return SetResult(entity_id=row.entity_id, action=request.action, outcome="refused", reason=str(exc),
                             state=row.state, attributes=row.attributes)
        if self.link is None or self.link.lost.is_set():
            raise LinkDownIpc("not connected to the broker: nothing was published")
        started = time.monotonic()
        for topic, payload in planned.messages:
            try:
                await self.link.publish(topic, payload.encode(), retain=bool(row.config.get("retain", False)))
            except LinkDown as exc:
                raise LinkDownIpc(str(exc)) from None
        published: list[dict[str, Any]] = [{"topic": t, "payload": p} for t, p in planned.messages]
        if planned.expect is None:
            outcome = "confirmed" if row.component == "button" else "unconfirmed"
            return SetResult(entity_id=row.entity_id, action=request.action, outcome=outcome,
                             reason=planned.why_unconfirmable + ("; the broker took the press" if outcome ==
                                                                 "confirmed" else ""), published=published,
                             state=row.state, attributes=row.attributes)
        expect = planned.expect
        current = self.entities.get(row.entity_id, row)
        try:
            async with asyncio.timeout(request.wait_s):
                async with self.changed:
                    await self.changed.wait_for(lambda: expect(self.entities.get(row.entity_id, row)))
        except TimeoutError:
            current = self.entities.get(row.entity_id, row)
            return SetResult(entity_id=row.entity_id, action=request.action, outcome="unconfirmed",
                             reason=f"the state did not show it within {request.wait_s:g} s (now {current.state!r})",
                             published=published, state=current.state, attributes=current.attributes)
        current = self.entities.get(row.entity_id, row)
        return SetResult(entity_id=row.entity_id, action=request.action, outcome="confirmed", published=published,
                         state=current.state, attributes=current.attributes,
                         latency_ms=round((time.monotonic() - started) * 1000, 1))

    async def _device_command(self, row: EntityRow, request: EntitySet) -> SetResult:
        commands: dict[str, Any] = row.config.get("commands") or {}  # type: ignore[assignment]
        if request.action not in commands:
            return SetResult(entity_id=row.entity_id, action=request.action, outcome="refused",
                             reason=f"{row.entity_id} declares {', '.join(commands) or 'no commands'}")
        spec = commands[request.action]
        schema = spec.get("args_schema", {"type": "object"}) if isinstance(spec, dict) else {"type": "object"}
        try:
            jsonschema.validate(dict(request.args), schema)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            return SetResult(entity_id=row.entity_id, action=request.action, outcome="refused",
                             reason=f"args{'.' + where if where else ''}: {exc.message[:200]}")
        result = await self.send_command(DeviceCommand(device_id=str(row.config["device_id"]), command=request.action,
                                                       args=dict(request.args), wait_s=request.wait_s,
                                                       requested_by=request.requested_by))
        outcome = "confirmed" if result.status == "answered" else "unconfirmed"
        return SetResult(entity_id=row.entity_id, action=request.action, outcome=outcome,
                         reason="" if outcome == "confirmed" else f"the device did not answer ({result.status})",
                         published=[{"topic": result.topic, "payload": {"command": request.action,
                                                                         "args": dict(request.args)}}],
                         latency_ms=result.latency_ms, attributes={"response": result.response})


class LinkDownIpc(IpcError):
    """The broker cannot be reached now: nothing was published."""

    code = "unavailable"
    status = 503
