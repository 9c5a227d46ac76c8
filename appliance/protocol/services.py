"""The processes of the appliance, declared once: read by the CLI, the supervisor, the agent and the api.

Each entry names the class that runs the process (imported only by `appliance serve`) and the
services it calls. The order is the start order: every service depends only on ones before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.protocol.common import ServiceName


@dataclass(frozen=True)
class ServiceSpec:
    name: ServiceName
    entry: str  # "module:Class"
    depends_on: tuple[ServiceName, ...]
    summary: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("store", "appliance.store.service:StoreService", (),
                "the one writer of the SQLite file: memory, accounts, tasks, devices, outbox, audit"),
    ServiceSpec("engine", "appliance.engine.service:EngineService", (),
                "llama.cpp: batched generation and embeddings"),
    ServiceSpec("mqtt", "appliance.mqtt.service:MqttService", ("store", "engine"),
                "devices in and out over MQTT"),
    ServiceSpec("agent", "appliance.agent.service:AgentService", ("store", "engine", "mqtt"),
                "scheduled jobs"),
    ServiceSpec("api", "appliance.api.service:ApiService", ("store", "engine", "mqtt", "agent"),
                "the control plane: REST and the admin page"),
)
SERVICE_NAMES: tuple[ServiceName, ...] = tuple(spec.name for spec in SERVICES)
BY_NAME: dict[ServiceName, ServiceSpec] = {spec.name: spec for spec in SERVICES}
