"""Devices: the store's event ingest, registry, quarantine and outbox, and the bridge's own endpoints.

Events reach the store in batches, already checked against the payload contract by the mqtt
bridge (docs/mqtt.md); the store commits a batch in one transaction and only then does the
bridge acknowledge the messages to the broker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from appliance.protocol.common import MAX_TEXT_CHARS, Changed, Empty, Message, endpoint
from appliance.protocol.store import MemoryRecord

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
QuarantineKind = Literal["not_utf8", "not_json", "too_large", "too_deep", "schema", "topic", "device_id",
                         "rate_limited", "discovery"]


class EventIn(Message):
    device: str = Field(pattern=DEVICE_ID)
    topic: str = Field(min_length=1, max_length=1024)
    kind: Literal["event", "state"] = "event"
    type: str = Field("", max_length=64)
    ts: float | None = Field(None, description="the device's own time for the event (unix seconds)")
    key: str = Field(min_length=1, max_length=200, description="id:<payload id> or h:<content hash>: the dedupe key")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the payload as received")
    received_at: float
    flood: bool = Field(False, description="sent faster than the device's rate: stored, marked, counted")


class EventBatch(Message):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class EventsStored(Message):
    stored: int
    duplicates: int


class Availability(Message):
    device: str = Field(pattern=DEVICE_ID)
    online: bool
    at: float


class DeviceRow(Message):
    device_id: str
    first_seen: float
    last_seen: float
    online: bool | None = Field(description="from the device's availability topic or last will; null if never said")
    online_at: float | None = None
    event_count: int
    last_topic: str
    last_payload: str


class DeviceQuery(Message):
    online: bool | None = Field(None, description="only devices whose availability is this")
    prefix: str | None = Field(None, min_length=1, max_length=128, description="device ids starting with this")
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=128, description="next_cursor of the page before")


class DevicePage(Message):
    items: list[DeviceRow]
    next_cursor: str | None = None


class DeviceId(Message):
    device_id: str = Field(pattern=DEVICE_ID)


class DeviceEventsQuery(Message):
    device_id: str = Field(pattern=DEVICE_ID)
    limit: int = Field(20, ge=1, le=200)


class DeviceEvents(Message):
    records: list[MemoryRecord] = Field(description="the device's newest events first")


class EventsAfter(Message):
    """Stored device events after a cursor, oldest first (the agent's mqtt: triggers read these)."""

    after_id: int | None = Field(None, ge=0, le=2**62, description="None: no events, only where the cursor is now")
    limit: int = Field(500, ge=1, le=5000)


class NewEvents(Message):
    records: list[MemoryRecord] = Field(description="oldest first")
    cursor: int = Field(description="pass as after_id next time")


class QuarantineIn(Message):
    kind: QuarantineKind
    reason: str = Field(max_length=500)
    topic: str = Field(max_length=300, description="as received, with anything unprintable escaped")
    device: str | None = Field(None, max_length=128)
    size: int = Field(ge=0)
    sample: str = Field(max_length=700, description="the first bytes, escaped")
    at: float


class QuarantineBatch(Message):
    items: list[QuarantineIn] = Field(max_length=10_000)
    counted_only: dict[QuarantineKind, Annotated[int, Field(ge=0)]] = Field(default_factory=dict,
                                         description="messages of each kind counted but not kept (a flood)")


class QuarantineRow(QuarantineIn):
    id: int


class QuarantineQuery(Message):
    kind: QuarantineKind | None = None
    device: str | None = Field(None, max_length=128)
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, pattern=r"^[0-9]{1,19}$")


class QuarantinePage(Message):
    items: list[QuarantineRow]
    counts: dict[str, int] = Field(description="messages quarantined (or dropped as a flood) per kind, ever")
    next_cursor: str | None = None


class OutboxIn(Message):
    target: Literal["mqtt", "webhook"]
    topic: str = Field(min_length=1, max_length=256, pattern=r"^[^#+\x00]+$",
                       description="the MQTT topic under the uplink's prefix (no wildcards), or the event's name "
                                   "for a webhook")
    payload: JsonValue


class OutboxItem(OutboxIn):
    id: int
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str


class OutboxNext(Message):
    target: Literal["mqtt", "webhook"]


class OutboxResult(Message):
    id: int
    delivered: bool
    error: str = Field("", max_length=500)
    retry_at: float = 0.0


class OutboxStats(Message):
    pending: int
    oldest_at: float | None = None
    delivered: int = Field(description="delivered in the last week (older rows are pruned)")


# The bridge's own endpoints (the mqtt service): publish, command a device, report.
class Publish(Message):
    topic: str = Field(min_length=1, max_length=1024)
    payload: JsonValue
    retain: bool = False


class Published(Message):
    topic: str
    mid: int


class DeviceCommand(Message):
    device_id: str = Field(pattern=DEVICE_ID)
    command: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    args: dict[str, JsonValue] = Field(default_factory=dict)
    wait_s: float = Field(5.0, ge=0, le=120, description="how long to wait for the device's answer; 0: do not")
    requested_by: str = Field("", max_length=128)


class CommandResult(Message):
    correlation_id: str
    topic: str
    status: Literal["delivered", "answered", "timed_out"]
    response: Any = None
    latency_ms: float | None = None


STORE_EVENTS = endpoint("store", "events/ingest", EventBatch, EventsStored)
STORE_AVAILABILITY = endpoint("store", "devices/availability", Availability, Changed)
STORE_DEVICES = endpoint("store", "devices/list", DeviceQuery, DevicePage)
STORE_DEVICE = endpoint("store", "devices/get", DeviceId, DeviceRow)
STORE_DEVICE_EVENTS = endpoint("store", "devices/events", DeviceEventsQuery, DeviceEvents)
STORE_EVENTS_AFTER = endpoint("store", "events/after", EventsAfter, NewEvents)
STORE_QUARANTINE_ADD = endpoint("store", "quarantine/add", QuarantineBatch, Changed)
STORE_QUARANTINE = endpoint("store", "quarantine/list", QuarantineQuery, QuarantinePage)
STORE_OUTBOX_ADD = endpoint("store", "outbox/add", OutboxIn, OutboxItem)
STORE_OUTBOX_NEXT = endpoint("store", "outbox/next", OutboxNext, OutboxItem)
STORE_OUTBOX_DONE = endpoint("store", "outbox/done", OutboxResult, Changed)
STORE_OUTBOX_STATS = endpoint("store", "outbox/stats", Empty, OutboxStats)

MQTT_PUBLISH = endpoint("mqtt", "publish", Publish, Published)
MQTT_COMMAND = endpoint("mqtt", "command", DeviceCommand, CommandResult)
