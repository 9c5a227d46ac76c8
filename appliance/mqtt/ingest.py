"""From broker to store: check each message, batch events into store transactions, then acknowledge.

The order of things is the durability argument: a message is acknowledged to the broker only
after the store has committed what it carried (the event, or its quarantine entry). If the
bridge dies in between, the broker still holds the message and redelivers it; the store's
dedupe keys make the second delivery a no-op. While the store is down nothing is acknowledged,
so the broker keeps everything (up to our Receive Maximum in flight, the rest queued) until it
is back: no event lives only in this process's memory.

The site's messages ride the same batches (mqtt/site.py): discovery announcements are committed
first, then events, then entity states, so a state that arrives with its entity's announcement
finds it; the rows a batch changed are handed to ``on_states``.

A batch goes to the store when it holds mqtt.batch_max events or its first event has waited
mqtt.batch_wait_s. It reaches the store in requests of at most MAX_STORE_BATCH items and half of
ipc.max_frame_bytes of JSON each (`chunks`): a batch grows past batch_max while the store is slow,
and 500 payloads of 64 KB are 32 MB, which the store would refuse as one frame (found by make
bench-mqtt's hostile publishers: every device's ingest stopped behind one refused batch). An event
too large for a request on its own is quarantined as too_large, never retried for ever.
Each device has a token bucket (mqtt.device_rate_per_s, mqtt.device_burst).
Flood protection limits cost, never data: an event past the bucket is stored all the same,
marked ``flood`` in its metadata and counted per device (one warning a minute), because the
broker acknowledged it and a device that flushes its backlog after an outage sends exactly such
a burst. Only a device named in mqtt.drop_flood_devices has its excess dropped: acknowledged,
counted as rate_limited, one sample a minute kept in quarantine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from appliance.config import MqttConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError, TooLarge
from appliance.mqtt.events import Refused, parse_event, quarantine_entry
from appliance.mqtt.link import Incoming
from appliance.phrases import Phrase
from appliance.protocol.common import Message, Store
from appliance.protocol.devices import (
    STORE_EVENTS,
    STORE_QUARANTINE_ADD,
    EventBatch,
    EventIn,
    QuarantineBatch,
    QuarantineIn,
    QuarantineKind,
)
from appliance.protocol.site import (
    STORE_ENTITY_PUT,
    STORE_ENTITY_STATES,
    EntityConfig,
    EntityPut,
    StateBatch,
    StateIn,
    StatesStored,
)
from appliance.runtime.metrics import Metrics

RETRY_S = 1.0
MAX_STORE_BATCH = 10_000  # EventBatch's limit
WARN_EVERY_S = 60.0
IN_FLIGHT = 2


def chunks(items: Sequence[Message], max_items: int, max_bytes: int) -> Iterator[int]:
    """How many of ``items``, from the front, go in each store request: at most ``max_items``, and at
    most ``max_bytes`` of JSON unless one item alone is larger (it then goes alone)."""
    count = used = 0
    for item in items:
        size = len(item.model_dump_json())
        if count and (count >= max_items or used + size > max_bytes):
            yield count
            count = used = 0
        count += 1
        used += size
    if count:
        yield count


@dataclass
class Bucket:
    tokens: float
    at: float
    warned_at: float = 0.0
    over: int = 0  # events past the rate, ever (stored as flood, or dropped where so configured)


@dataclass
class Pending:
    events: list[EventIn] = field(default_factory=list)
    quarantined: list[QuarantineIn] = field(default_factory=list)
    throttled: int = 0
    puts: list[EntityConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    states: list[StateIn] = field(default_factory=list)
    messages: list[Incoming] = field(default_factory=list)  # to acknowledge once committed
    since: float = 0.0


class Ingest:
    def __init__(self, store: IpcClient[Store], config: MqttConfig, metrics: Metrics, log: logging.Logger,
                 max_request_bytes: int) -> None:
        self.store = store
        self.config = config
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.log = log
        self.pending = Pending()
        self._buckets: dict[str, Bucket] = {}
        self._ready = asyncio.Event()
        self.problem: Phrase | None = None  # why the store is not taking batches, while it is not
        self.stored = self.duplicates = self.rejected = self.throttled = self.flooded = 0
        self._drop_flood = frozenset(config.drop_flood_devices)
        self.flooded_by_device: Counter[str] = Counter()  # stored as flood, per device (only those that flooded)
        # Told what each batch changed: the states, and the entities announced and withdrawn.
        self.on_states: Callable[[StatesStored], Awaitable[None]] | None = None
        self.on_entities: Callable[[list[EntityConfig], list[str]], Awaitable[None]] | None = None

    def _take(self, message: Incoming) -> None:
        if not self.pending.messages:
            self.pending.since = time.monotonic()
        self.pending.messages.append(message)
        self._ready.set()

    def offer_site(self, message: Incoming, puts: list[EntityConfig], removed: list[str]) -> None:
        """Entities a discovery message announced (or withdrew): stored with the batch, then acknowledged."""
        self.pending.puts += puts
        self.pending.removed += removed
        self._take(message)

    def offer_states(self, message: Incoming, states: list[StateIn]) -> None:
        """The states one payload carried for its entities: stored with the batch, then acknowledged."""
        self.pending.states += states
        self._take(message)

    def quarantine(self, message: Incoming, kind: QuarantineKind, reason: str) -> None:
        """A message refused for ``reason``: its quarantine entry goes with the batch, then it is acknowledged."""
        self.pending.quarantined.append(quarantine_entry(Refused(kind, reason), message.topic_bytes, message.payload,
                                                         time.time()))
        self.rejected += 1
        self._take(message)

    def offer(self, message: Incoming) -> None:
        """Check one message and add it to the current batch (as an event, a quarantine entry or a count)."""
        now = time.time()
        try:
            event = parse_event(message.topic_bytes, message.payload, self.config, now)
        except Refused as refused:
            self.pending.quarantined.append(quarantine_entry(refused, message.topic_bytes, message.payload, now))
            self.rejected += 1
            self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", outcome="quarantined")
        else:
            if self._allowed(event.device, now):
                self.pending.events.append(event)
            elif event.device in self._drop_flood:
                self._throttle(event, message, now)
            else:
                self._flood(event, now)
        self._take(message)

    def _allowed(self, device: str, now: float) -> bool:
        rate, burst = self.config.device_rate_per_s, self.config.device_burst
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) > 100_000:  # forget devices whose buckets have refilled
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < burst}
            bucket = self._buckets[device] = Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def _flood(self, event: EventIn, now: float) -> None:
        bucket = self._buckets[event.device]
        bucket.over += 1
        self.flooded += 1
        self.flooded_by_device[event.device] += 1
        self.pending.events.append(event.model_copy(update={"flood": True}))
        self.metrics.inc("appliance_mqtt_flood_events_total", "events past a device's rate, stored marked flood")
        if now - bucket.warned_at >= WARN_EVERY_S:
            self.log.warning("device %s sends faster than %g events/s: its events are stored marked flood "
                             "(%d so far)", event.device, self.config.device_rate_per_s, bucket.over,
                             extra={"DEVICE_ID": event.device})
            bucket.warned_at = now

    def _throttle(self, event: EventIn, message: Incoming, now: float) -> None:
        bucket = self._buckets[event.device]
        bucket.over += 1
        self.throttled += 1
        self.pending.throttled += 1
        self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", outcome="rate_limited")
        if now - bucket.warned_at >= WARN_EVERY_S:
            self.log.warning("device %s sends faster than %g events/s: dropped as configured "
                             "(mqtt.drop_flood_devices; %d so far)", event.device, self.config.device_rate_per_s,
                             bucket.over, extra={"DEVICE_ID": event.device})
            bucket.warned_at = now
            self.pending.quarantined.append(QuarantineIn(
                kind="rate_limited", reason=f"over {self.config.device_rate_per_s:g} events/s; dropped, counted",
                topic=event.topic[:300], device=event.device, size=len(message.payload),
                sample=event.text[:600], at=now))
            self.pending.throttled -= 1  # this one is kept as the sample, not only counted

    async def run(self) -> None:
        """Commit batches forever: when full, or when the oldest has waited batch_wait_s.

        Up to IN_FLIGHT batches are at the store at once, so it never sits idle while this side
        acknowledges one batch and gathers the next (the store still commits them one after the
        other, in order: it is the only writer). Acks still go
        out in the order the messages came (MQTT asks it of a client): each batch waits for the
        one before it."""
        in_flight: deque[asyncio.Task[None]] = deque()
        try:
            while True:
                await self._ready.wait()
                wait = self.config.batch_wait_s - (time.monotonic() - self.pending.since)
                if len(self.pending.messages) < self.config.batch_max and wait > 0:
                    await asyncio.sleep(wait)
                if len(in_flight) >= IN_FLIGHT:
                    await in_flight.popleft()
                    continue  # meanwhile the batch grew: look again
                batch, self.pending = self.pending, Pending()
                self._ready.clear()
                in_flight.append(asyncio.create_task(self._commit(batch, after=in_flight[-1] if in_flight else None)))
                while in_flight and in_flight[0].done():
                    in_flight.popleft().result()
        finally:
            for task in in_flight:
                task.cancel()

    async def _commit(self, batch: Pending, after: asyncio.Task[None] | None = None) -> None:
        """Store the batch (retrying while the store is away), then, once the batch before it is
        acknowledged, acknowledge its messages."""
        await self._store(batch)
        if after is not None:
            await asyncio.shield(after)
        for message in batch.messages:
            message.ack()

    async def _store_events(self, batch: Pending) -> None:
        """The batch's next request of events; what the store committed leaves the batch (a retry
        must not send it again)."""
        count = next(chunks(batch.events, MAX_STORE_BATCH, self.max_request_bytes))
        try:
            done = await self.store.call(STORE_EVENTS, EventBatch(events=batch.events[:count]))
        except TooLarge as exc:
            if count > 1:
                raise
            event = batch.events[0]  # alone larger than a request may be: kept in quarantine, acknowledged
            batch.quarantined.append(QuarantineIn(
                kind="too_large", reason=f"larger than one store request may be (ipc.max_frame_bytes): {exc}"[:500],
                topic=event.topic[:300], device=event.device, size=len(event.text), sample=event.text[:600],
                at=time.time()))
            self.rejected += 1
            batch.events = batch.events[1:]
            return
        batch.events = batch.events[count:]
        self.stored += done.stored
        self.duplicates += done.duplicates
        self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", done.stored, outcome="stored")
        self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", done.duplicates,
                         outcome="duplicate")

    async def _store(self, batch: Pending) -> None:
        while True:
            try:
                if batch.puts or batch.removed:
                    for start in range(0, max(len(batch.puts), len(batch.removed)), MAX_STORE_BATCH):
                        await self.store.call(STORE_ENTITY_PUT, EntityPut(
                            put=batch.puts[start : start + MAX_STORE_BATCH],
                            removed=batch.removed[start : start + MAX_STORE_BATCH]))
                    if self.on_entities is not None:
                        await self.on_entities(batch.puts, batch.removed)
                    batch.puts, batch.removed = [], []
                while batch.events:
                    await self._store_events(batch)
                while batch.states:
                    count = next(chunks(batch.states, MAX_STORE_BATCH, self.max_request_bytes))
                    stored = await self.store.call(STORE_ENTITY_STATES, StateBatch(states=batch.states[:count]))
                    if self.on_states is not None:
                        await self.on_states(stored)
                    batch.states = batch.states[count:]
                if batch.quarantined or batch.throttled:
                    counted: dict[QuarantineKind, int] = {"rate_limited": batch.throttled} if batch.throttled else {}
                    await self.store.call(STORE_QUARANTINE_ADD, QuarantineBatch(items=batch.quarantined,
                                                                               counted_only=counted))
                self.problem = None
                break
            except IpcError as exc:
                if self.problem is None:
                    self.log.warning("the store does not take events (%s); holding %d messages unacknowledged",
                                     exc, len(batch.messages))
                self.problem = Phrase("mqtt.store_unavailable", why=str(exc))
                await asyncio.sleep(RETRY_S)
