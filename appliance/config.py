"""The appliance's one configuration model, loaded once from one YAML file.

Every section rejects unknown keys, so a typo is an error rather than a silently ignored
setting. `load_config` turns every problem into a `ConfigError` whose message is one line
naming the key path (``mqtt.port``) and what is wrong with it; the CLI exits with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.validation import describe_validation_error

DEFAULT_CONFIG_PATH = Path("config/agent.yaml")
CONFIG_ENV = "APPLIANCE_CONFIG"
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports STATE_DIRECTORY; a root developer gets the FHS path,
    # anyone else a per-user directory, so `make run` never needs sudo.
    if env := os.environ.get("STATE_DIRECTORY"):
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/appliance")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(xdg) / "appliance"


def _default_runtime_dir() -> Path:
    if env := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/appliance")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "appliance"
    return Path(f"/tmp/appliance-{os.geteuid()}")


class MemoryConfig(_Section):
    """Long-term memory (reference design keys)."""

    vector_dim: int = Field(384, ge=8, le=4096, description="embedding dimension of every memory")
    # "binary": sign-bit codes in RAM, over-fetch, exact float rescoring (docs/memory.md).
    # "flat": exact float scan. "hnsw" (the reference design's word) is served by "binary",
    # the approximate index this store has.
    index_type: Literal["binary", "flat", "hnsw"] = "binary"
    candidates: int = Field(512, ge=16, le=100_000, description="binary index: least rows rescored exactly per query")
    candidate_fraction: float = Field(0.002, ge=0, le=0.1,
                                      description="binary index: rescore at least this share of all memories")
    storage_path: Path | None = Field(None, description="directory of memory.db; default <state_dir>/memory")
    ring_size: int = Field(1000, ge=1, le=1_000_000, description="short-term entries kept per conversation")
    archive_after_days: float = Field(30.0, ge=0, le=36_500, description="unpinned memories older move to archive")
    archive_interval_s: float = Field(86_400.0, ge=60, le=30 * 86_400, description="how often the agent archives")
    archive_segment_records: int = Field(2000, ge=10, le=100_000)
    chunk_chars: int = Field(1200, ge=100, le=20_000, description="document chunk size in characters")
    chunk_overlap: int = Field(200, ge=0, le=10_000, description="characters shared by neighbouring chunks")
    recency_half_life_days: float = Field(30.0, gt=0, le=36_500)
    weight_vector: float = Field(0.6, ge=0, le=1, description="hybrid score: cosine similarity weight")
    weight_text: float = Field(0.25, ge=0, le=1, description="hybrid score: normalised BM25 weight")
    weight_recency: float = Field(0.1, ge=0, le=1, description="hybrid score: recency weight")
    weight_importance: float = Field(0.05, ge=0, le=1, description="hybrid score: importance weight")
    key_file: Path | None = Field(None, description="AES-256 key ring; default <state_dir>/keys/memory.key")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> MemoryConfig:
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_chars ({self.chunk_chars})")
        return self

    @field_validator("index_type", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ResourceConfig(_Section):
    max_concurrency: int = Field(4, ge=1, le=64, description="generation streams served at once")
    gpu_enabled: bool = Field(True, description="offload to a GPU when llama.cpp was built with one")
    gpu_fraction: float = Field(0.7, gt=0.0, le=1.0, description="share of free GPU memory to use")
    gpu_reserve_mib: int = Field(1024, ge=0, le=1 << 20, description="GPU memory the tuner never plans for")
    ram_reserve_fraction: float = Field(0.10, ge=0.0, lt=0.9, description="share of total RAM left free")
    max_queue: int = Field(16, ge=0, le=1024, description="requests waiting beyond max_concurrency")


class SecurityConfig(_Section):
    auth_required: bool = Field(True, description="false is refused unless the api listens on loopback only")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret; unset: Ed25519 keys made on first start (`appliance keys rotate`)"
    )
    token_ttl_s: int = Field(86_400, ge=60, le=365 * 86_400, description="default lifetime of device and app tokens")
    access_ttl_s: int = Field(900, ge=60, le=3600, description="lifetime of the access token a login gives")
    refresh_ttl_s: int = Field(7 * 86_400, ge=3600, le=90 * 86_400, description="lifetime of a refresh token")
    scrypt_cost: int = Field(15, ge=10, le=18,
                             description="password hashing: scrypt N = 2**cost (r=8, p=1; 32 MiB at 15)")
    login_failures_before_lockout: int = Field(5, ge=1, le=100, description="consecutive wrong passwords per user")
    lockout_s: float = Field(60.0, ge=1, le=86_400, description="first lockout; each further failure doubles it")
    lockout_max_s: float = Field(3600.0, ge=1, le=7 * 86_400, description="longest lockout (an admin can clear it)")
    login_per_ip_per_minute: int = Field(20, ge=1, le=10_000, description="login attempts one address may make")

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError(
                "must be at least 32 bytes (HS256 needs a 256-bit key); "
                "leave it unset to sign with an Ed25519 key instead"
            )
        return value


class EngineConfig(_Section):
    chat_model: Path | None = Field(None, description="GGUF chat model; default <state_dir>/models/chat.gguf")
    embedding_model: Path | None = Field(
        None, description="GGUF embedding model; default <state_dir>/models/embedding.gguf"
    )
    n_ctx: int = Field(4096, ge=512, le=1 << 20, description="context wanted; the tuner may plan less")
    n_threads: int | None = Field(None, ge=1, le=512, description="unset: the tuner's choice")
    n_gpu_layers: int | None = Field(None, ge=0, le=1024, description="unset: the tuner's choice")
    kv_type: Literal["auto", "f16", "q8_0"] = Field("auto", description="KV cache type; auto: tuner")
    load_timeout_s: float = Field(600.0, gt=0, le=3600)


class TlsClientConfig(_Section):
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


class HomeAssistantConfig(_Section):
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


class UplinkMqttConfig(_Section):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(8883, ge=1, le=65_535)
    tls: TlsClientConfig = TlsClientConfig(enabled=True)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, max_length=128)
    topic_prefix: str = Field("appliance", min_length=1, max_length=128)


class UplinkWebhookConfig(_Section):
    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://")
    ca_file: Path | None = Field(None, description="trust this CA for the webhook's certificate")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="e.g. an Authorization header")
    timeout_s: float = Field(10.0, gt=0, le=120)


class UplinkConfig(_Section):
    """What leaves the box, when configured: the outbox is flushed here whenever the network is up."""

    mqtt: UplinkMqttConfig | None = None
    webhook: UplinkWebhookConfig | None = None
    retry_min_s: float = Field(2.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86_400)
    max_items: int = Field(100_000, ge=10, le=10_000_000, description="oldest undelivered items go past this")


class MqttConfig(_Section):
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
    device_rate_per_s: float = Field(50.0, gt=0, le=100_000, description="sustained events per device")
    device_burst: int = Field(200, ge=1, le=1_000_000, description="events a device may send at once")
    batch_max: int = Field(500, ge=1, le=10_000, description="events committed to the store together")
    batch_wait_s: float = Field(0.01, ge=0, le=5, description="longest an event waits for its batch")
    command_topic: str = Field("devices/{device}/commands", min_length=1, max_length=256)
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
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


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ApiTlsConfig(_Section):
    # auto: the configured files if set; else plain HTTP on a loopback host; else a self-signed
    # certificate made on first start. off: plain HTTP even on the network (say so explicitly).
    mode: Literal["auto", "self-signed", "files", "off"] = "auto"
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ApiTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        if self.mode == "files" and self.cert_file is None:
            raise ValueError("mode 'files' needs cert_file and key_file")
        return self


class ApiConfig(_Section):
    host: str = Field("0.0.0.0", min_length=1, description="all interfaces: staff reach the admin page")
    port: int = Field(8080, ge=1, le=65_535)
    tls: ApiTlsConfig = ApiTlsConfig()
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    allowed_origins: list[str] = Field(default_factory=list, max_length=32,
                                       description="browser origins besides the page's own (CORS, WebSocket)")
    metrics_allow: list[str] = Field(default_factory=list, max_length=32,
                                     description="addresses (CIDR) that may scrape /api/v1/metrics without a token")

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def tls_mode(self) -> Literal["self-signed", "files", "off"]:
        """What tls.mode auto means here: the files if set, plain HTTP on loopback, else self-signed."""
        if self.tls.mode != "auto":
            return self.tls.mode
        return "files" if self.tls.cert_file else ("off" if self.loopback_only else "self-signed")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"{origin[:80]!r} is not an origin like https://host:port (no path)")
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network[:80]!r}: {exc}") from None
        return value


class IpcConfig(_Section):
    timeout_s: float = Field(10.0, gt=0, le=600, description="default deadline of one IPC call")
    max_frame_bytes: int = Field(4 << 20, ge=4096, le=256 << 20)


class SandboxLimits(_Section):
    cpu_s: int = Field(60, ge=1, le=86_400, description="CPU seconds")
    memory_mib: int = Field(512, ge=16, le=1 << 20, description="address space")
    processes: int = Field(64, ge=1, le=10_000, description="processes and threads (the fork-bomb guard)")
    wall_s: float = Field(300.0, gt=0, le=86_400, description="killed at this deadline")
    output_bytes: int = Field(65_536, ge=1024, le=16 << 20, description="kept of stdout and of stderr, each")
    file_mib: int = Field(64, ge=1, le=1 << 20, description="largest file it may write")
    open_files: int = Field(256, ge=16, le=65_536)


RoleName = Literal["admin", "operator", "viewer"]


class ActionConfig(_Section):
    """A sandboxed action: an argv (never a shell string) whose ``{name}`` elements are arguments."""

    command: list[str] = Field(min_length=1, max_length=256)
    description: str = Field("", max_length=500)
    args_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "additionalProperties": False},
                                        description="JSON schema of the arguments")
    env: dict[str, str] = Field(default_factory=dict, description="the only environment it gets, besides PATH/HOME")
    network: bool = Field(False, description="share the box's network (none by default)")
    readable: list[Path] = Field(default_factory=list, max_length=32, description="extra paths, read-only")
    writable: list[Path] = Field(default_factory=list, max_length=32, description="paths it may write besides /work")
    limits: SandboxLimits = SandboxLimits()
    roles: list[RoleName] = Field(default_factory=lambda: list[RoleName](["admin", "operator"]),
                                  description="who may run it")

    @field_validator("command")
    @classmethod
    def _placeholders_whole(cls, value: list[str]) -> list[str]:
        for part in value:
            if "{" in part and not re.fullmatch(r"\{[a-z_][a-z0-9_]{0,63}\}", part):
                raise ValueError(f"{part!r}: an argument placeholder must be a whole element, like '{{path}}'")
        return value


class AgentConfig(_Section):
    heartbeat_interval_s: float = Field(30.0, ge=0.1, le=86_400)
    backfill_interval_s: float = Field(60.0, ge=0.1, le=86_400,
                                       description="how often memories stored without a vector are embedded")
    max_parallel_tasks: int = Field(4, ge=1, le=256, description="tasks running at once besides model work")
    schedules_file: Path | None = Field(None, description="the reference form's tasks: list (YAML)")
    scripts_dir: Path | None = Field(None, description="read-only working directory of inline commands")
    command_readable: list[Path] = Field(default_factory=list, max_length=32,
                                         description="paths inline commands may read (e.g. the logs they check)")
    output_dirs: list[Path] = Field(default_factory=list, max_length=16,
                                    description="where output_path may write; default <state_dir>/outputs")
    workspace_dir: Path | None = Field(None, description="per-run workspaces; default <state_dir>/workspaces")
    default_limits: SandboxLimits = Field(SandboxLimits(), description="limits of inline commands")
    alert_topic: str = Field("appliance/alerts", min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")
    sandbox_helper: Path | None = Field(Path("/run/appliance-sandbox.sock"),
                                        description="when this socket exists (the systemd units), sandboxed runs go "
                                                    "through the root helper behind it; else the agent runs bwrap")
    actions: dict[str, ActionConfig] = Field(default_factory=dict, max_length=256)

    @field_validator("actions")
    @classmethod
    def _action_names(cls, value: dict[str, ActionConfig]) -> dict[str, ActionConfig]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name) or name in BUILTIN_ACTIONS:
                raise ValueError(f"{name!r}: action names are lower_snake_case and not a built-in's "
                                 f"({', '.join(BUILTIN_ACTIONS)})")
        return value


BUILTIN_ACTIONS = ("send_alert", "heartbeat", "archive")


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class PathsConfig(_Section):
    state_dir: Path = Field(default_factory=_default_state_dir)
    runtime_dir: Path = Field(default_factory=_default_runtime_dir)


class ApplianceConfig(_Section):
    memory: MemoryConfig = MemoryConfig()
    resource: ResourceConfig = ResourceConfig()
    security: SecurityConfig = SecurityConfig()
    engine: EngineConfig = EngineConfig()
    mqtt: MqttConfig = MqttConfig()
    api: ApiConfig = ApiConfig()
    ipc: IpcConfig = IpcConfig()
    agent: AgentConfig = AgentConfig()
    logging: LoggingConfig = LoggingConfig()
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> ApplianceConfig:
        if not self.security.auth_required and not self.api.loopback_only:
            raise ValueError(f"security.auth_required: false is only allowed when api.host is loopback "
                             f"({', '.join(LOOPBACK_HOSTS)}), not {self.api.host!r}")
        return self

    @property
    def memory_dir(self) -> Path:
        return self.memory.storage_path or self.paths.state_dir / "memory"

    @property
    def memory_key_path(self) -> Path:
        return self.memory.key_file or self.paths.state_dir / "keys" / "memory.key"

    @property
    def chat_model_path(self) -> Path:
        return self.engine.chat_model or self.paths.state_dir / "models" / "chat.gguf"

    @property
    def embedding_model_path(self) -> Path:
        return self.engine.embedding_model or self.paths.state_dir / "models" / "embedding.gguf"

    def socket_path(self, service: str) -> Path:
        return self.paths.runtime_dir / f"{service}.sock"

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, defaults filled in, secrets as asterisks."""
        data = self.model_dump(mode="json")
        data["memory"]["storage_path"] = str(self.memory_dir)
        data["engine"]["chat_model"] = str(self.chat_model_path)
        data["engine"]["embedding_model"] = str(self.embedding_model_path)
        return data


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"line {mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_config(text: str, source: str = "<config>") -> ApplianceConfig:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f":{where.line + 1}:{where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{at}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of sections, got {type(data).__name__}")
    try:
        return ApplianceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def resolve_config_path(cli_path: str | None) -> Path:
    return Path(cli_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> ApplianceConfig:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, str(path))
