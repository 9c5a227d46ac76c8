"""The appliance as a device in Home Assistant: one device-based discovery message, and its states.

Published retained to ``<discovery prefix>/device/<node id>/config`` (full key names, no
abbreviations): ``device`` (identifiers, name, model, manufacturer, sw_version), ``origin``
(name, sw_version), the shared availability topic, and ``components``, one per
entity, each with its ``platform`` and ``unique_id``:

- sensors: overall status, each service's status, events/s, tokens/s, the last answer;
- a text entity to ask the agent (what is typed there is answered into the last-answer sensor);
- a button that runs the heartbeat (a self-check of every service, published at once);
- an event entity for task results (the agent publishes them).

Availability: the bridge publishes ``online`` (retained) when it connects and leaves ``offline``
as its last will. When Home Assistant announces itself (``online`` on ``<prefix>/status``) the
discovery message is published again after a short random delay, as Home Assistant asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance import __version__
from appliance.config import HomeAssistantConfig
from appliance.protocol.services import SERVICE_NAMES


@dataclass(frozen=True)
class Topics:
    """Where the appliance's entities live: ``appliance/<node id>/...``."""

    node: str
    discovery: str
    status: str  # HA's birth/last-will topic, e.g. homeassistant/status
    task_result: str  # the agent publishes there (config: home_assistant.task_result_topic)

    @classmethod
    def for_config(cls, config: HomeAssistantConfig) -> Topics:
        node = config.node
        return cls(node=node, discovery=f"{config.discovery_prefix}/device/{node}/config",
                   status=f"{config.discovery_prefix}/status", task_result=config.task_result_topic)

    @property
    def base(self) -> str:
        return f"appliance/{self.node}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def answer(self) -> str:
        return f"{self.base}/answer"

    @property
    def ask(self) -> str:
        return f"{self.base}/ask/set"

    @property
    def heartbeat(self) -> str:
        return f"{self.base}/heartbeat/press"

    @property
    def commands(self) -> list[str]:
        """What the bridge subscribes to for Home Assistant: its birth message and the two controls."""
        return [self.status, self.ask, self.heartbeat]


def discovery_payload(topics: Topics) -> dict[str, Any]:
    node = topics.node

    def entity(object_id: str, platform: str, name: str, **options: Any) -> tuple[str, dict[str, Any]]:
        return object_id, {"platform": platform, "unique_id": f"{node}_{object_id}", "name": name, **options}

    state = {"state_topic": topics.state}
    components = dict([
        entity("status", "sensor", "Status", value_template="{{ value_json.status }}", icon="mdi:server", **state),
        *(entity(f"service_{name}", "sensor", f"{name.capitalize()} service",
                 value_template=f"{{{{ value_json.services.{name} }}}}", entity_category="diagnostic", **state)
          for name in SERVICE_NAMES),
        entity("events_per_s", "sensor", "Device events", unit_of_measurement="events/s", state_class="measurement",
               value_template="{{ value_json.events_per_s }}", **state),
        entity("tokens_per_s", "sensor", "Generation speed", unit_of_measurement="tokens/s",
               state_class="measurement", value_template="{{ value_json.tokens_per_s }}", **state),
        entity("last_answer", "sensor", "Last answer", state_topic=topics.answer,
               value_template="{{ value_json.text[:250] }}", json_attributes_topic=topics.answer,
               icon="mdi:robot"),
        entity("ask", "text", "Ask the agent", command_topic=topics.ask, max=255, mode="text",
               icon="mdi:comment-question"),
        entity("heartbeat", "button", "Run the heartbeat", command_topic=topics.heartbeat, payload_press="PRESS",
               entity_category="diagnostic"),
        entity("task_result", "event", "Task result", state_topic=topics.task_result,
               event_types=["succeeded", "failed", "cancelled", "timed_out"]),
    ])
    return {
        "device": {"identifiers": [node], "name": f"Appliance {node.removeprefix('appliance_')}",
                   "manufacturer": "appliance", "model": "Edge AI agent appliance", "sw_version": __version__},
        "origin": {"name": "appliance", "sw_version": __version__},
        "availability": [{"topic": topics.availability, "payload_available": "online",
                          "payload_not_available": "offline"}],
        "qos": 1,
        "components": components,
    }
