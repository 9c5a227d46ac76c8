"""The mqtt section: the site's broker, Home Assistant discovery, the uplink (outbox targets)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from appliance.config.base import Section

# A device id as the topics carry it (protocol/devices.py's DEVICE_ID; config imports no protocol).
DeviceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class TlsClientConfig(Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip broker certificate verification (testing only)")


def _check_topic_filter(topic: str) -> str:
    """MQTT 3.1.1 section 4.7 rules for a subscription filter."""
    if not topic or len(topic.encode()) > 65_535 or "\0" in topic:
        raise ValueError(f"invalid MQTT topic filter {topic!r}: empty, too long or contains NUL")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"invalid MQTT topic filter {topic!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"invalid MQTT topic filter {topic!r}: '+' must be a whole level")
    return topic


class HomeAssistantConfig(Section):
    enabled: bool = Field(True, description="announce the appliance to Home Assistant by MQTT discovery")
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    node_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                description="default: appliance_<host name>")
    state_interval_s: float = Field(10.0, ge=1, le=3600, description="how often the entities' states are published")

    @property
    def node(self) -> str:
        """What Home Assistant knows this box by: node_id, else one made from the host name."""
        return self.node_id or "appliance_" + re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:48]

    @property
    def task_result_topic(self) -> str:
        """Where the agent announces each task's end (the discovery's task_result event entity)."""
        return f"appliance/{self.node}/task_result"


class UplinkMqttConfig(Section):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(8883, ge=1, le=65_535)
    tls: TlsClientConfig = TlsClientConfig(enabled=True)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, max_length=128)
    topic_prefix: str = Field("appliance", min_length=1, max_length=128)


class UplinkWebhookConfig(Section):
    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://")
    ca_file: Path | None = Field(None, description="trust this CA for the webhook's certificate")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="e.g. an Authorization header")
    timeout_s: float = Field(10.0, gt=0, le=120)


class UplinkConfig(Section):
    """What leaves the box, when configured: the outbox is flushed here whenever the network is up."""

    mqtt: UplinkMqttConfig | None = None
    webhook: UplinkWebhookConfig | None = None
    retry_min_s: float = Field(2.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86_400)
    max_items: int = Field(100_000, ge=10, le=10_000_000, description="oldest undelivered items go past this")


class ChatTopicsConfig(Section):
    """The MQTT chat gateway (docs/gateways.md): lines on in_topic are answered on out_topic."""

    enabled: bool = False
    in_topic: str = Field("appliance/chat/in", min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")
    out_topic: str = Field("appliance/chat/out", min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")
    max_chars: int = Field(2000, ge=1, le=16_000, description="longer messages are refused on out_topic")


class MqttConfig(Section):
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65_535)
    tls: TlsClientConfig = TlsClientConfig()
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="pinned, so the broker keeps our session; default appliance-<host>")
    topics: list[str] = Field(default_factory=lambda: ["devices/+/events", "devices/+/state"],
                              min_length=1, max_length=64)
    availability_topics: list[str] = Field(default_factory=lambda: ["devices/+/availability"], max_length=16,
                                           description="online/offline (retained, or a device's last will)")
    allowed_topics: list[str] | None = Field(None, max_length=64,
                                             description="topics a device may publish on; default: the filters")
    qos: Literal[1] = Field(1, description="QoS 1: every event is acknowledged only once it is stored")
    keepalive_s: int = Field(60, ge=5, le=3600)
    session_expiry_s: int = Field(86_400, ge=0, le=2**32 - 1,
                                  description="how long the broker keeps our session (and events) while we are away")
    max_payload_bytes: int = Field(64 * 1024, ge=64, le=16 << 20)
    max_json_depth: int = Field(8, ge=1, le=64)
    dedupe_window_s: float = Field(600.0, ge=1, le=7 * 86_400,
                                   description="a payload without an id is a duplicate if seen again this soon")
    device_rate_per_s: float = Field(50.0, gt=0, le=100_000,
                                     description="sustained events per device; faster ones are stored marked flood")
    device_burst: int = Field(200, ge=1, le=1_000_000, description="events a device may send at once")
    device_quota_events: int = Field(
        1_000_000, ge=100, le=1_000_000_000,
        description="live events one device may hold; its oldest beyond this go to the archive (checked each minute)")
    drop_flood_devices: list[DeviceName] = Field(
        default_factory=list, max_length=10_000,
        description="devices whose events past the rate are dropped (acknowledged and counted), not stored")
    receive_max_bytes: int = Field(
        64 << 20, ge=1 << 20, le=4 << 30,
        description="payload bytes received and not yet acknowledged at most; past it the bridge stops reading "
                    "until the store commits (bounds its memory when payloads are large)")
    batch_max: int = Field(500, ge=1, le=10_000, description="events committed to the store together")
    batch_wait_s: float = Field(0.01, ge=0, le=5, description="longest an event waits for its batch")
    command_topic: str = Field("devices/{device}/commands", min_length=1, max_length=256)
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    chat: ChatTopicsConfig = ChatTopicsConfig()
    uplink: UplinkConfig = UplinkConfig()

    @field_validator("topics", "availability_topics", "allowed_topics")
    @classmethod
    def _valid_filters(cls, value: list[str] | None) -> list[str] | None:
        return [_check_topic_filter(t) for t in value] if value is not None else None

    @property
    def pinned_client_id(self) -> str:
        """The client id the broker knows us by, the same at every start (a persistent session)."""
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
        return self.client_id or f"appliance-{host}"[:64]
