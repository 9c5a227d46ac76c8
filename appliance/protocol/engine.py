"""The engine's messages: generation (streamed), embeddings and metrics."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from appliance.protocol.common import MAX_PROMPT_CHARS, BoundedText, Empty, Message, endpoint


class Priority(StrEnum):
    """Who is waiting: a person (interactive) before a scheduled check before background work."""

    INTERACTIVE = "interactive"
    SCHEDULED = "scheduled"
    BACKGROUND = "background"


TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


class ToolCall(Message):
    """A call the model asked for: a tool offered in the request, arguments valid against its schema."""

    name: str = Field(pattern=TOOL_NAME)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(Message):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field("", max_length=MAX_PROMPT_CHARS)
    tool_calls: list[ToolCall] | None = Field(None, max_length=16, description="an assistant turn's calls")


class ToolFunction(Message):
    name: str = Field(pattern=TOOL_NAME)
    description: str = Field("", max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}},
                                       description="the arguments' JSON schema")


class Tool(Message):
    """A tool the model may call, in the OpenAI form the chat templates expect."""

    type: Literal["function"] = "function"
    function: ToolFunction


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
    fit_context: bool = Field(False, description="when the messages do not fit the context, drop the oldest turns "
                                                 "after the system message, then the system message's last lines")
    tools: list[Tool] | None = Field(None, min_length=1, max_length=64, description="tools the model may call")
    tool_choice: str = Field("auto", max_length=64, description="auto, none, required (some call, forced by a "
                                                                "grammar), or a tool's name (that call, forced)")

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
        names = [tool.function.name for tool in self.tools or []]
        if self.tools is not None and self.prompt is not None:
            raise ValueError("tools need messages (the chat template lays them out), not a raw prompt")
        if len(set(names)) != len(names):
            raise ValueError("tools: two tools have the same name")
        if self.tool_choice not in ("auto", "none", "required", *names):
            raise ValueError(f"tool_choice: {self.tool_choice[:64]!r} is not auto, none, required or an offered tool")
        if self.tool_choice not in ("auto", "none") and self.json_schema is not None:
            raise ValueError("give json_schema or a forced tool_choice, not both: each constrains the whole reply")
        return self

    @property
    def forced_tools(self) -> list[Tool] | None:
        """The tools one of which the reply must call (a grammar makes sure), or None."""
        if self.tools is None or self.tool_choice in ("auto", "none"):
            return None
        return [t for t in self.tools if self.tool_choice in ("required", t.function.name)]


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
    messages_dropped: int = 0  # fit_context: turns left out so the prompt fits
    system_lines_dropped: int = 0  # fit_context: last lines of the system message left out
    tool_calls: list[ToolCall] | None = None  # with tools: the calls the reply asked for, checked


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
    embed_skipped_late_total: int = 0


class EngineStatus(Message):
    """What the engine loaded and why: the models, the tuner's plan with its reasons, the box it saw."""

    chat_model: str = Field(description="the chat model file loaded, or empty")
    embedding_model: str = ""
    plan: dict[str, Any] | None = Field(None, description="the tuner's plan for the chat model (engine.plan)")
    hardware: dict[str, Any] = Field(default_factory=dict, description="the probe of this box")
    gpu_offload: bool = False
    problems: list[str] = Field(default_factory=list)


ENGINE_GENERATE = endpoint("engine", "generate", GenerateRequest, GenerateChunk, streaming=True)
ENGINE_EMBED = endpoint("engine", "embed", EmbedRequest, EmbedResponse)
ENGINE_METRICS = endpoint("engine", "metrics", Empty, EngineMetrics)
ENGINE_STATUS = endpoint("engine", "status", Empty, EngineStatus)
