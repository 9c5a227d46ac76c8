"""The topics of /control's subscriptions, declared once: what each one reads and how often.

A topic is a command read on a period (api/hub.py runs one poller per topic for the whole api
process); a caller may subscribe to a topic exactly when it may run that command, which is how
the capabilities list (control/capabilities.py) and the hub decide it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Topic:
    command: str  # what is read (a subscriber's role must allow it); for a pushed topic, what may read it
    every_s: float  # 0: pushed (messages.broadcast), never polled
    args: dict[str, Any] = field(default_factory=dict)
    # For list topics: the key of a row and what tells a changed row from the one seen before.
    key: str | None = None
    version: tuple[str, ...] = ()
    every_read: bool = False  # send each read, changed or not (metrics: a chart's next point)
    snapshot: bool = False  # a pushed topic whose command gives each new subscriber the whole state first


TOPICS: dict[str, Topic] = {
    "services": Topic("system.health", 2.0),
    # The dashboard's page: services, the model and its plan, CPU, memory, disk, temperatures.
    "status": Topic("system.status", 2.0),
    "metrics": Topic("system.metrics", 1.0, every_read=True),
    "tasks": Topic("tasks.list", 1.0, {"limit": 100}, key="id", version=("updated_at", "progress", "last_seq")),
    "devices": Topic("devices.list", 1.0, {"limit": 500}, key="device_id",
                     version=("last_seen", "online", "event_count")),
    "audit": Topic("audit.list", 1.0, {"limit": 100}, key="id", version=("id",)),
    "messages": Topic("auth.me", 0.0),  # anyone signed in; sent by messages.broadcast, not read
    # The site's entities: the whole list first, then each change as the mqtt service commits it.
    "entities": Topic("entities.list", 0.0, {"limit": 20_000}, key="entity_id", snapshot=True),
}
