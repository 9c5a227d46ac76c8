"""The mqtt service: devices in and out, Home Assistant, the network watch and the outbox courier.

One connection to the site's broker at a time (mqtt/link.py), remade with exponential backoff
and jitter when it drops; a broker that is down leaves the service `degraded` and retrying,
never crashed. Incoming messages are routed by topic: device events and states to the ingest
(mqtt/ingest.py: acknowledged only once stored), availability to the registry, answers to the
command waiting for them (mqtt/commands.py), Home Assistant's birth message and controls to
their handlers (mqtt/discovery.py), and the site's discovery configs and entity states to the
site bridge (mqtt/site.py), whose commands by entity go out on the same connection. The network
watch (mqtt/network.py) tells the courier (mqtt/uplink.py) when the outbox can be flushed upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role
from appliance.control.chat import chat_reply
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.system import HealthReport
from appliance.control.table import default_table
from appliance.gateways import agent_reply
from appliance.ipc.errors import IpcError
from appliance.ipc.server import IpcServer
from appliance.mqtt.chat import MqttChat
from appliance.mqtt.commands import Commander
from appliance.mqtt.discovery import Topics, discovery_payload
from appliance.mqtt.ingest import Ingest
from appliance.mqtt.link import READ_SLICE, Incoming, LinkDown, MqttLink, Settings
from appliance.mqtt.network import NetworkWatch
from appliance.mqtt.site import SiteBridge
from appliance.mqtt.uplink import Courier
from appliance.phrases import Phrase
from appliance.protocol.common import MetricFamily, MetricSample, Mqtt, ServiceHealth, ServiceState
from appliance.protocol.devices import (
    MQTT_COMMAND,
    MQTT_PUBLISH,
    STORE_AVAILABILITY,
    STORE_OUTBOX_STATS,
    Availability,
    CommandResult,
    DeviceCommand,
    OutboxStats,
    Publish,
    Published,
)
from appliance.protocol.engine import ENGINE_METRICS
from appliance.protocol.site import MQTT_ENTITY_SET
from appliance.protocol.topics import topic_filter
from appliance.runtime.service import Service

FIRST_CONNECT_WAIT_S = 10.0
MAX_BACKOFF_S = 30.0
HOME_ASSISTANT = Caller("homeassistant", Role.VIEWER, "mqtt")
CHAT = Caller("mqtt:chat", Role.VIEWER, "mqtt")
DISCOVERY_DELAY_S = (0.5, 5.0)  # Home Assistant asks for a random delay before re-announcing
# mosquitto's count of messages it dropped on full queues since it started (published every sys_interval,
# 10 s by default); other brokers, or an ACL, may not give it: then health says it is not readable.
BROKER_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class MqttService(Service[Mqtt]):
    name = "mqtt"

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        cfg = config.mqtt
        self.client_id = cfg.pinned_client_id
        self.ingest = Ingest(self.peer("store"), cfg, self.metrics, self.log,
                             max_request_bytes=config.ipc.max_frame_bytes // 2)  # room for the envelope
        self.commander = Commander(self.client_id, cfg.command_topic, self.log)
        self.network = NetworkWatch(self.log)
        self.courier = Courier(cfg.uplink, self.peer("store"), self.network, self.client_id, self.log)
        self.topics = Topics.for_config(cfg.home_assistant)
        self._availability_topics = topic_filter(tuple(cfg.availability_topics))
        self.dispatcher = Dispatcher(default_table(), self.peers, config, self.log)
        self.chat = MqttChat(cfg.chat, self._publish_chat, self.log)
        self.chat.register_handler(agent_reply(self.dispatcher, CHAT))
        self.site = SiteBridge(config, self.peer("store"), self.peer("api"), [self.topics.discovery],
                               self._device_command, self.log) if config.site.enabled else None
        if self.site is not None:
            self.ingest.on_states, self.ingest.on_entities = self.site.committed, self.site.announced
        self.link: MqttLink | None = None
        self.outbox = OutboxStats(pending=0, delivered=0)
        self._broker_problem: Phrase | None = Phrase("mqtt.not_connected_yet")
        self._attempted = asyncio.Event()
        self._state_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stored_at_last_state = (0, time.monotonic())
        self._broker_dropped: int | None = None  # the broker's $SYS counter, last read
        self._broker_dropped_at_connect: int | None = None
        self.metrics.gauge("appliance_mqtt_outbox_pending", "items waiting to go upstream", lambda: self.outbox.pending)
        self.metrics.gauge("appliance_mqtt_outbox_oldest_age_seconds", "age of the oldest item waiting to go upstream",
                           lambda: time.time() - self.outbox.oldest_at if self.outbox.oldest_at else 0.0)
        self.metrics.gauge("appliance_mqtt_network_online", "1 while a default route is up",
                           lambda: self.network.online)

    def register(self, ipc: IpcServer[Mqtt]) -> None:
        ipc.add(MQTT_PUBLISH, self.publish)
        ipc.add(MQTT_COMMAND, self.send_command)
        if self.site is not None:
            ipc.add(MQTT_ENTITY_SET, self.site.set)

    async def start(self) -> None:
        if self.site is not None:
            await self._load_site()
        self._tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in (
            ("broker", self._connect_forever()), ("ingest", self.ingest.run()), ("network", self.network.run()),
            ("courier", self.courier.run()), ("states", self._states_forever()),
            *([("site", self.site.subscriber())] if self.site is not None else []))]
        # Ready means "bridge running": after the first attempt, connected or not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), FIRST_CONNECT_WAIT_S)
        self._refresh_state()

    async def _load_site(self) -> None:
        """The registry from the store before the first connection (its state topics are subscribed then)."""
        assert self.site is not None
        for attempt in range(30):
            try:
                await self.site.load()
                return
            except IpcError as exc:
                if attempt == 0:
                    self.log.warning("the site's entities cannot be read yet (%s); retrying", exc)
                await asyncio.sleep(1.0)
        self.log.error("the site's entities could not be read; they come back as discovery is retained")

    async def _device_command(self, command: DeviceCommand) -> CommandResult:
        return await self.send_command(command)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.link is not None:
            await self.link.close()
        await self.courier.close()

    # --- state ------------------------------------------------------------------------------

    def _refresh_state(self) -> None:
        problems = [p for p in (self._broker_problem, self.ingest.problem, self.courier.problem) if p]
        if problems:
            self.set_state(ServiceState.DEGRADED, *problems)
        else:
            cfg = self.config.mqtt
            self.set_state(ServiceState.READY,
                           Phrase("mqtt.ready", host=cfg.host, port=cfg.port, client=self.client_id))

    def health(self) -> ServiceHealth:
        """The state as set (logged on change) plus live counters (read on each call, never logged)."""
        i = self.ingest
        flood = Phrase("mqtt.flooded", n=i.flooded, most=", ".join(
            f"{d} {n}" for d, n in i.flooded_by_device.most_common(3))) if i.flooded else ""
        outbox = Phrase("mqtt.outbox_oldest", n=self.outbox.pending,
                        age_s=f"{time.time() - self.outbox.oldest_at:.0f}") if self.outbox.oldest_at \
            else Phrase("mqtt.outbox", n=self.outbox.pending)
        return super().health().extended(
            Phrase("mqtt.counts", stored=i.stored, duplicates=i.duplicates, quarantined=i.rejected,
                   dropped=i.throttled), flood, self.site.summary() if self.site is not None else "",
            self._broker_drops(),
            Phrase("mqtt.network_up" if self.network.online else "mqtt.network_down", why=self.network.why), outbox)

    async def collect_metrics(self) -> list[MetricFamily]:
        connected = self.link is not None and not self.link.lost.is_set()
        return [MetricFamily(name="appliance_mqtt_connected", kind="gauge", help="1 while connected to the broker",
                             samples=[MetricSample(value=float(connected))])]

    # --- the broker connection --------------------------------------------------------------

    def _settings(self) -> Settings:
        cfg = self.config.mqtt
        return Settings(host=cfg.host, port=cfg.port, client_id=self.client_id, keepalive_s=cfg.keepalive_s,
                        username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
                        tls=cfg.tls, session_expiry_s=cfg.session_expiry_s,
                        receive_maximum=min(65_535, max(100, 20 * cfg.batch_max)),
                        receive_max_bytes=cfg.receive_max_bytes,
                        will=(self.topics.availability, b"offline", True))

    async def _connect_forever(self) -> None:
        cfg = self.config.mqtt
        backoff = 1.0
        while True:
            link = MqttLink(self._settings())
            reading: asyncio.Task[None] | None = None
            try:
                resumed = await link.connect()
                # A resumed session's backlog flows the moment the broker accepts us, and our SUBACKs
                # queue behind it: read (store, acknowledge) from now on, or past receive_maximum
                # unacknowledged messages nothing more is read, the SUBACK never comes, and each
                # reconnect meets the same backlog (found by make soak: the bridge stopped for good).
                reading = asyncio.create_task(self._read(link), name="mqtt-read")
                await link.subscribe([*cfg.topics, *cfg.availability_topics, self.commander.response_topic,
                                      *(self.topics.commands if cfg.home_assistant.enabled else []),
                                      *([cfg.chat.in_topic] if cfg.chat.enabled else [])])
                self._broker_dropped_at_connect = None
                await link.subscribe([BROKER_DROPPED_TOPIC], qos=0)  # refused by an ACL: simply never comes
                if self.site is not None:
                    site_filters = self.site.filters()
                    for start in range(0, len(site_filters), 200):
                        await link.subscribe(site_filters[start : start + 200])
                    self.site.link = link
                self.link = link
                await link.publish(self.topics.availability, b"online", retain=True)
                if cfg.home_assistant.enabled:
                    await self._announce()
                    self._state_wanted.set()
                self.log.info("connected to %s:%d as %s (%s)", cfg.host, cfg.port, self.client_id,
                              "session resumed" if resumed else "new session")
                self._broker_problem = None
                backoff = 1.0
            except (LinkDown, TimeoutError) as exc:
                if reading is not None:
                    reading.cancel()
                await link.close()
                self._broker_problem = Phrase("mqtt.broker_problem", host=cfg.host, port=cfg.port,
                                              why=str(exc) or type(exc).__name__)
            else:
                self._attempted.set()
                self._refresh_state()
                assert reading is not None
                await reading
                self._broker_problem = Phrase("mqtt.broker_problem", host=cfg.host, port=cfg.port,
                                              why=link.reason or "connection lost")
                await link.close()
            self._attempted.set()
            self._refresh_state()
            delay = backoff * random.uniform(0.5, 1.5)  # noqa: S311 - jitter: devices must not reconnect in step
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _read(self, link: MqttLink) -> None:
        while batch := await link.take():
            for n, message in enumerate(batch, 1):
                await self._route(message)
                if n % READ_SLICE == 0:
                    await asyncio.sleep(0)  # let the store's answers and the acks through

    async def _route(self, message: Incoming) -> None:
        cfg, topic = self.config.mqtt, message.topic
        if topic == self.commander.response_topic:
            self.commander.on_response(message)
            message.ack()
        elif topic == BROKER_DROPPED_TOPIC:
            self._on_broker_dropped(message.payload)
            message.ack()
        elif cfg.home_assistant.enabled and topic in self.topics.commands:
            message.ack()
            self._background(self._home_assistant(topic, message.payload))
        elif cfg.chat.enabled and topic == cfg.chat.in_topic:
            message.ack()
            self._background(self.chat.on_message(message.payload))
        elif self._availability_topics.fullmatch(topic):
            await self._availability(message)
        elif self.site is not None and self.site.handles(topic):
            self.site.offer(message, self.ingest)
        else:
            self.ingest.offer(message)

    def _on_broker_dropped(self, payload: bytes) -> None:
        try:
            count = int(payload.strip())
        except ValueError:
            return
        if self._broker_dropped_at_connect is None:
            self._broker_dropped_at_connect = count
            if count:
                self.log.warning("the broker has dropped %d messages since it started (full queues): check its "
                                 "max_queued_messages and max_queued_bytes (docs/mqtt.md)", count)
        elif self._broker_dropped is not None and count > self._broker_dropped:
            self.log.warning("the broker dropped %d more messages (%d since it started): its queues are full",
                             count - self._broker_dropped, count)
        self._broker_dropped = count
        self.metrics.set("appliance_mqtt_broker_dropped_messages", "messages the broker dropped on full queues "
                         "since it started ($SYS)", float(count))

    def _broker_drops(self) -> Phrase:
        if self._broker_dropped is None:
            return Phrase("mqtt.broker_drops_unknown")
        if not self._broker_dropped:
            return Phrase("mqtt.broker_dropped_nothing")
        return Phrase("mqtt.broker_dropped", n=self._broker_dropped)

    async def _availability(self, message: Incoming) -> None:
        """``online``/``offline`` on a device's availability topic (or its last will) into the registry."""
        word = message.payload.decode("utf-8", "replace").strip().strip('"').lower()
        levels = message.topic.split("/")
        if word in ("online", "offline") and len(levels) >= 3:
            with contextlib.suppress(IpcError, ValueError):
                await self.peer("store").call(STORE_AVAILABILITY, Availability(
                    device=levels[1], online=word == "online", at=time.time()))
                message.ack()
                return
        self.ingest.offer(message)  # not an availability message: the contract decides (quarantine)

    def _background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _publish_chat(self, topic: str, payload: bytes) -> None:
        try:
            if self.link is None:
                raise LinkDown("not connected")
            await self.link.publish(topic, payload)
        except LinkDown as exc:
            self.log.warning("a chat reply on %s was lost: %s", topic, exc)

    # --- Home Assistant ---------------------------------------------------------------------

    async def _announce(self) -> None:
        if self.link is not None:
            body = json.dumps(discovery_payload(self.topics)).encode()
            await self.link.publish(self.topics.discovery, body, retain=True)

    async def _home_assistant(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.topics.status and payload.strip().lower() == b"online":
                await asyncio.sleep(random.uniform(*DISCOVERY_DELAY_S))  # noqa: S311 - spreading, not secrecy
                await self._announce()
            elif topic == self.topics.ask and payload.strip():
                await self._answer(payload.decode("utf-8", "replace")[:2000])
            elif topic == self.topics.heartbeat:
                self._state_wanted.set()
        except (LinkDown, CommandError, IpcError) as exc:
            self.log.warning("Home Assistant request on %s failed: %s", topic, exc)

    async def _answer(self, question: str) -> None:
        reply = await chat_reply(self.dispatcher, {"message": question, "max_tokens": 200}, HOME_ASSISTANT)
        if self.link is not None:
            answer = {"question": question, "text": reply.text, "citations": [c.model_dump() for c in reply.citations],
                      "at": time.time()}
            await self.link.publish(self.topics.answer, json.dumps(answer).encode(), retain=True)

    async def _states_forever(self) -> None:
        """Every state_interval_s, or at once when asked (a new connection, the heartbeat button)."""
        while True:
            with contextlib.suppress(IpcError):
                self.outbox = await self.peer("store").call(STORE_OUTBOX_STATS, timeout_s=3.0)
            self._refresh_state()
            if self.config.mqtt.home_assistant.enabled:
                try:
                    await self._publish_state()
                except (LinkDown, CommandError, IpcError) as exc:
                    self.log.info("the state for Home Assistant was not published: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_wanted.wait(), self.config.mqtt.home_assistant.state_interval_s)
            self._state_wanted.clear()

    async def _publish_state(self) -> None:
        if self.link is None or self.link.lost.is_set():
            return
        report = await self.dispatcher.call("system.health", {}, HOME_ASSISTANT)
        assert isinstance(report, HealthReport)
        stored, at = self._stored_at_last_state
        now = time.monotonic()
        rate = (self.ingest.stored - stored) / max(now - at, 1e-3)
        self._stored_at_last_state = (self.ingest.stored, now)
        tokens = 0.0
        with contextlib.suppress(IpcError):
            tokens = (await self.peer("engine").call(ENGINE_METRICS, timeout_s=2.0)).generation_tokens_per_s
        state = {"status": report.status, "services": {s.name: s.state.value for s in report.services},
                 "events_per_s": round(rate, 2), "tokens_per_s": tokens, "outbox_pending": self.outbox.pending,
                 "network": "up" if self.network.online else "down"}
        await self.link.publish(self.topics.state, json.dumps(state).encode(), retain=True)

    # --- IPC --------------------------------------------------------------------------------

    async def publish(self, request: Publish) -> Published:
        if self.link is None or self.link.lost.is_set():
            raise LinkDownIpc(f"not connected to the broker: {self._broker_problem}")
        try:
            # UTF-8, not \u escapes: staff read alerts in their language with any MQTT client.
            body = json.dumps(request.payload, ensure_ascii=False).encode()
            mid = await self.link.publish(request.topic, body, retain=request.retain)
        except LinkDown as exc:
            raise LinkDownIpc(str(exc)) from None
        return Published(topic=request.topic, mid=mid)

    async def send_command(self, command: DeviceCommand) -> CommandResult:
        try:
            return await self.commander.send(self.link, command)
        except LinkDown as exc:
            raise LinkDownIpc(f"not connected to the broker: {exc}") from None


class LinkDownIpc(IpcError):
    """The broker cannot be reached now: the command was not sent."""

    code = "unavailable"
    status = 503
