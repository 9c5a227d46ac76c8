"""The appliance's one configuration model, loaded once from one YAML file.

Every section rejects unknown keys, so a typo is an error rather than a silently ignored
setting. `load_config` turns every problem into a `ConfigError` whose message is one line
naming the key path (``mqtt.port``) and what is wrong with it; the CLI exits with code 2.
The larger sections live beside this file (mqtt.py, agent.py; base.py holds what they share);
everything is imported from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.config.agent import ActionConfig, AgentConfig, RoleName, SandboxLimits
from appliance.config.base import ConfigError, Section, default_runtime_dir, default_state_dir
from appliance.config.mqtt import (
    HomeAssistantConfig,
    MqttConfig,
    TlsClientConfig,
    UplinkConfig,
    UplinkMqttConfig,
    UplinkWebhookConfig,
)
from appliance.config.site import EntityRule, SiteConfig
from appliance.validation import describe_validation_error

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "LOOPBACK_HOSTS",
    "MAX_CONFIG_BYTES",
    "ActionConfig",
    "AgentConfig",
    "ApiConfig",
    "ApiTlsConfig",
    "ApplianceConfig",
    "ConfigError",
    "EngineConfig",
    "EntityRule",
    "HomeAssistantConfig",
    "IpcConfig",
    "LoggingConfig",
    "MemoryConfig",
    "MqttConfig",
    "PathsConfig",
    "ResourceConfig",
    "RoleName",
    "SandboxLimits",
    "Section",
    "SecurityConfig",
    "SiteConfig",
    "TlsClientConfig",
    "UplinkConfig",
    "UplinkMqttConfig",
    "UplinkWebhookConfig",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = Path("config/agent.yaml")
CONFIG_ENV = "APPLIANCE_CONFIG"
MAX_CONFIG_BYTES = 1 << 20


class MemoryConfig(Section):
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


class ResourceConfig(Section):
    max_concurrency: int = Field(4, ge=1, le=64, description="generation streams served at once")
    gpu_enabled: bool = Field(True, description="offload to a GPU when llama.cpp was built with one")
    gpu_fraction: float = Field(0.7, gt=0.0, le=1.0, description="share of free GPU memory to use")
    gpu_reserve_mib: int = Field(1024, ge=0, le=1 << 20, description="GPU memory the tuner never plans for")
    ram_reserve_fraction: float = Field(0.10, ge=0.0, lt=0.9, description="share of total RAM left free")
    max_queue: int = Field(16, ge=0, le=1024, description="requests waiting beyond max_concurrency")


class SecurityConfig(Section):
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


# Sentence encoders shipped as packages (engine/encoders.py), with their vector dimensions.
PACKAGED_ENCODERS: dict[str, int] = {"use-multilingual-v3": 512}


class EngineConfig(Section):
    chat_model: Path | None = Field(None, description="GGUF chat model; default <state_dir>/models/chat.gguf")
    embedding_encoder: Literal["gguf", "use-multilingual-v3"] = Field(
        "use-multilingual-v3", description="what embeds memories and questions: the packaged multilingual "
        "Universal Sentence Encoder (Chinese and English, 512 dims), or gguf: embedding_model run by llama.cpp")
    embedding_model: Path | None = Field(
        None, description="GGUF embedding model (embedding_encoder gguf); default <state_dir>/models/embedding.gguf"
    )
    n_ctx: int = Field(4096, ge=512, le=1 << 20, description="context wanted; the tuner may plan less")
    n_threads: int | None = Field(None, ge=1, le=512, description="unset: the tuner's choice")
    n_gpu_layers: int | None = Field(None, ge=0, le=1024, description="unset: the tuner's choice")
    kv_type: Literal["auto", "f16", "q8_0"] = Field("auto", description="KV cache type; auto: tuner")
    cpu_repack: Literal["auto", "on", "off"] = Field(
        "auto", description="llama.cpp's repacked CPU weights; auto: off where the CPU advertises AMX (engine/plan.py)")
    load_timeout_s: float = Field(600.0, gt=0, le=3600)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ApiTlsConfig(Section):
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


class WebSocketConfig(Section):
    """WebSocket /control (docs/control-protocol.md): what one connection may cost the box."""

    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 << 20, description="larger frames close the socket (1009)")
    frames_per_s: float = Field(20.0, gt=0, le=10_000, description="frames a client may send per second, sustained")
    burst: int = Field(40, ge=1, le=100_000, description="frames a client may send at once above that rate")
    send_queue: int = Field(512, ge=16, le=100_000, description="frames waiting for a slow reader before it is "
                                                                "dropped (memory never grows with it)")
    auth_timeout_s: float = Field(5.0, gt=0, le=60, description="a browser's first frame must authenticate by then")
    heartbeat_s: float = Field(20.0, ge=1, le=600, description="ping interval; no pong by the next one closes")
    max_inflight: int = Field(16, ge=1, le=1000, description="requests one connection may have running at once")
    max_clients: int = Field(1000, ge=1, le=100_000, description="/control sockets open at once; past it a new one "
                                                                 "is answered 503 (counted in the api's health)")
    # A quarter of max_clients: a fleet of panels sharing one app token still fits; a stolen token
    # cannot take every place (the soak's 50 sockets and bench-realtime's 125 per token fit too).
    max_clients_per_user: int = Field(256, ge=1, le=100_000, description="/control sockets one user (a token's "
                                      "subject) may hold; past it 429, or close 4429 after an auth frame")
    max_unauthenticated_per_address: int = Field(64, ge=1, le=100_000, description="/control sockets from one "
                                                 "address not authenticated yet; past it 503")


class ApiConfig(Section):
    host: str = Field("0.0.0.0", min_length=1, description="all interfaces: staff reach the admin page")
    port: int = Field(8080, ge=1, le=65_535)
    tls: ApiTlsConfig = ApiTlsConfig()
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    max_connections: int = Field(4096, ge=16, le=1_000_000,
                                 description="open HTTP connections at most; past it the one idle longest is closed "
                                             "for a new one (api/connections.py)")
    request_head_timeout_s: float = Field(10.0, gt=0, le=600, description="a connection must send a whole request "
                                                                          "head this soon, or it is closed as slow")
    allowed_origins: list[str] = Field(default_factory=list, max_length=32,
                                       description="browser origins besides the page's own (CORS, WebSocket)")
    metrics_allow: list[str] = Field(default_factory=list, max_length=32,
                                     description="addresses (CIDR) that may scrape /api/v1/metrics without a token")
    websocket: WebSocketConfig = WebSocketConfig()

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


class IpcConfig(Section):
    timeout_s: float = Field(10.0, gt=0, le=600, description="default deadline of one IPC call")
    max_frame_bytes: int = Field(4 << 20, ge=4096, le=256 << 20)


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class PathsConfig(Section):
    state_dir: Path = Field(default_factory=default_state_dir)
    runtime_dir: Path = Field(default_factory=default_runtime_dir)


class ApplianceConfig(Section):
    memory: MemoryConfig = MemoryConfig()
    resource: ResourceConfig = ResourceConfig()
    security: SecurityConfig = SecurityConfig()
    engine: EngineConfig = EngineConfig()
    mqtt: MqttConfig = MqttConfig()
    api: ApiConfig = ApiConfig()
    ipc: IpcConfig = IpcConfig()
    agent: AgentConfig = AgentConfig()
    site: SiteConfig = SiteConfig()
    logging: LoggingConfig = LoggingConfig()
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="before")
    @classmethod
    def _vector_dim_of_the_encoder(cls, data: Any) -> Any:
        """Unless memory.vector_dim is given, it is the packaged encoder's (a GGUF's is 384 by default)."""
        if not isinstance(data, dict):
            return data
        engine, memory = data.get("engine") or {}, data.get("memory") or {}
        if isinstance(engine, dict) and isinstance(memory, dict) and "vector_dim" not in memory:
            encoder = engine.get("embedding_encoder", EngineConfig.model_fields["embedding_encoder"].default)
            if encoder in PACKAGED_ENCODERS:
                data = {**data, "memory": {**memory, "vector_dim": PACKAGED_ENCODERS[encoder]}}
        return data

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

    @property
    def embedding_identity(self) -> str:
        """Which model makes the vectors, as the store records it: vectors of two models are never compared."""
        if self.engine.embedding_encoder != "gguf":
            return self.engine.embedding_encoder
        return f"gguf:{self.embedding_model_path.resolve().name}"

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
