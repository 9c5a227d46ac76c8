"""The mqtt service: subscribes to the site's device topics and hands each event to the store.

Each event is embedded by the engine on the way; while the engine is down events are stored
without a vector (found by full-text search) and the agent's backfill job embeds them later.

The broker or the store being down never stops the service: it reports `degraded` with the
reason, reconnects with backoff, and keeps events for the store in a bounded queue until the
store answers again (a durable outbox is the mqtt issue's work).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import aiomqtt

from appliance.config import ApplianceConfig
from appliance.control.memory_client import MemoryClient
from appliance.ipc.errors import IpcError, IpcTimeout, ServiceDown, Unavailable
from appliance.mqtt.events import EventRejected, parse_event
from appliance.protocol.common import Mqtt, ServiceState
from appliance.protocol.store import MemoryIn
from appliance.runtime.service import Service

MAX_PENDING = 10_000
RETRY_S = 2.0
FIRST_CONNECT_WAIT_S = 10.0


class MqttService(Service[Mqtt]):
    name = "mqtt"

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self.pending: deque[MemoryIn] = deque(maxlen=MAX_PENDING)
        self.memory = MemoryClient(self.peer("store"), self.peer("engine"), self.log)
        self.metrics.gauge("appliance_mqtt_pending", "events waiting for the store", lambda: len(self.pending))
        self.stored = self.rejected = 0
        self._broker_problem: str | None = "not connected yet"
        self._store_problem: str | None = None
        self._attempted = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def _client(self) -> aiomqtt.Client:
        cfg = self.config.mqtt
        tls = None
        if cfg.tls.enabled:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None)
        return aiomqtt.Client(
            cfg.host, cfg.port, username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            identifier=cfg.client_id, keepalive=cfg.keepalive_s, tls_params=tls,
            tls_insecure=cfg.tls.insecure if cfg.tls.enabled else None)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._subscribe_forever()),
                       asyncio.create_task(self._retry_forever())]
        # Ready means "bridge running": after the first attempt, connected or not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), FIRST_CONNECT_WAIT_S)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pending:
            self.log.warning("stopping with %d events the store never took", len(self.pending))

    def _refresh_state(self) -> None:
        problems = [p for p in (self._broker_problem, self._store_problem) if p]
        counts = f"{self.stored} stored, {self.rejected} rejected, {len(self.pending)} queued"
        if problems:
            self.set_state(ServiceState.DEGRADED, f"{'; '.join(problems)} ({counts})")
        else:
            cfg = self.config.mqtt
            self.set_state(ServiceState.READY, f"{cfg.host}:{cfg.port} {','.join(cfg.topics)} ({counts})")

    async def _subscribe_forever(self) -> None:
        cfg = self.config.mqtt
        backoff = 1.0
        while True:
            try:
                async with self._client() as client:
                    for topic in cfg.topics:
                        await client.subscribe(topic, qos=cfg.qos)
                    backoff = 1.0
                    self._broker_problem = None
                    self._refresh_state()
                    self._attempted.set()
                    async for message in client.messages:
                        await self._on_message(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                self._broker_problem = f"broker {cfg.host}:{cfg.port} unreachable: {exc}"
                self._refresh_state()
                self._attempted.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _on_message(self, topic: str, payload: object) -> None:
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            event = parse_event(topic, raw, self.config.mqtt.max_payload_bytes)
        except EventRejected as exc:
            self.rejected += 1
            self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", outcome="rejected")
            self.log.warning("rejected message on %.200r: %s", topic, exc, extra={"MQTT_TOPIC": topic[:200]})
            self._refresh_state()
            return
        self.pending.append(event)
        await self.flush()

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            if self.pending:
                await self.flush()

    async def flush(self) -> None:
        """Hand queued events to the store, oldest first, until it is empty or the store fails."""
        async with self._flush_lock:
            while self.pending:
                try:
                    await self.memory.remember(self.pending[0])
                except (ServiceDown, IpcTimeout, Unavailable) as exc:
                    self._store_problem = f"store unavailable: {exc}"
                    break
                except IpcError as exc:  # the store refused this one event; keep the rest
                    self.log.warning("store refused event from %s: %s", self.pending[0].source, exc)
                    self.rejected += 1
                else:
                    self.stored += 1
                    self.metrics.inc("appliance_mqtt_events_total", "device messages by outcome", outcome="stored")
                    self._store_problem = None
                self.pending.popleft()
            self._refresh_state()
