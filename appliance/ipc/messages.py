"""Every message that crosses a process boundary, defined once and shared by both ends.

An `Endpoint` names a method of one service together with its request and response types, so
the server's handler and the client's call are checked against the same declaration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

ServiceName = Literal["store", "engine", "mqtt", "agent", "api"]
# Dependency order: each service only calls services listed before it (the api reads all).
SERVICE_NAMES: tuple[ServiceName, ...] = ("store", "engine", "mqtt", "agent", "api")

MAX_TEXT_CHARS = 64 * 1024
MAX_PROMPT_CHARS = 256 * 1024


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Endpoint(Generic[Req, Resp]):
    """One IPC method: served at ``/v1/<method>`` on the owning service's socket."""

    method: str
    request: type[Req]
    response: type[Resp]
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/v1/{self.method}"


class Empty(Message):
    pass


class ServiceState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    DOWN = "down"  # reported by a peer that cannot reach the service at all


class ServiceHealth(Message):
    name: ServiceName
    state: ServiceState
    version: str
    uptime_s: float
    pid: int | None = None
    detail: str = ""


def _finite(vector: list[float]) -> list[float]:
    for i, value in enumerate(vector):
        if not math.isfinite(value):
            raise ValueError(f"element {i} is {value}: vectors must be finite")
    return vector


Vector = Annotated[list[float], Field(min_length=1, max_length=4096), AfterValidator(_finite)]
# One text in a list: errors name its index ("texts.3: String should have at most ...").
BoundedText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


# --- engine -------------------------------------------------------------------------------


class Priority(StrEnum):
    """Who is waiting: a person (interactive) before a scheduled check before background work."""

    INTERACTIVE = "interactive"
    SCHEDULED = "scheduled"
    BACKGROUND = "background"


class ChatMessage(Message):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class GenerateRequest(Message):
    """A completion: either a raw ``prompt`` or chat ``messages`` rendered with the model's template."""

    prompt: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=256)
    max_tokens: int = Field(128, ge=1, le=8192)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    priority: Priority = Priority.INTERACTIVE
    json_schema: dict[str, Any] | None = Field(None, description="constrain the reply to this JSON schema")
    ignore_eos: bool = Field(False, description="generate max_tokens even past the end token (benchmarks)")

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, value: list[str]) -> list[str]:
        for s in value:
            if not 0 < len(s) <= 64:
                raise ValueError("each stop sequence must be 1 to 64 characters")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and sum(len(m.content) for m in self.messages) > MAX_PROMPT_CHARS:
            raise ValueError(f"messages hold more than {MAX_PROMPT_CHARS} characters in all")
        return self


class GenerateChunk(Message):
    """One streamed piece of a completion; the last one has ``done`` set and the totals."""

    index: int
    text: str = ""
    done: bool = False
    finish_reason: Literal["stop", "length", "cancelled"] | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the cached system-prompt prefix
    completion_tokens: int = 0
    ttft_ms: float = 0.0  # from arrival at the engine to the first token
    elapsed_ms: float = 0.0
    parsed: Any = None  # with json_schema: the parsed reply, already validated against the schema


class EmbedRequest(Message):
    texts: list[BoundedText] = Field(min_length=1, max_length=64)


class EmbedResponse(Message):
    dim: int
    vectors: list[list[float]]


class EngineMetrics(Message):
    chat_model: str = ""
    embedding_model: str = ""
    max_concurrency: int = 0
    queue_depth: int = 0
    active_streams: int = 0
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    requests_total: int = 0
    completed_total: int = 0
    cancelled_total: int = 0
    rejected_busy_total: int = 0
    prefix_cache_hits_total: int = 0
    prompt_tokens_total: int = 0
    generated_tokens_total: int = 0
    prompt_tokens_per_s: float = 0.0
    generation_tokens_per_s: float = 0.0
    ttft_ms_p50: float = 0.0
    ttft_ms_p95: float = 0.0
    embed_requests_total: int = 0
    embed_texts_total: int = 0


# --- the catalogue ------------------------------------------------------------------------

HEALTH = Endpoint("health", Empty, ServiceHealth)

ENGINE_GENERATE = Endpoint("generate", GenerateRequest, GenerateChunk, streaming=True)
ENGINE_EMBED = Endpoint("embed", EmbedRequest, EmbedResponse)
ENGINE_METRICS = Endpoint("metrics", Empty, EngineMetrics)

