"""Counters the decode thread updates and the metrics endpoint reads.

Rates come from the last few hundred decode steps. A step that mixes prompt chunks and
generated tokens is split between the two in proportion to their token counts (llama.cpp
computes them in one pass, so no exact split exists).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from appliance.protocol.common import MetricFamily, MetricSample
from appliance.protocol.engine import EngineMetrics

WINDOW = 256


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class EngineCounters:
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    prefix_hits: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    embed_requests: int = 0
    embed_texts: int = 0
    embed_skipped_late: int = 0  # requests whose caller had stopped waiting before their turn (ipc/deadline.py)
    _steps: deque[tuple[int, int, float]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    _ttft: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add_step(self, prompt_tokens: int, generated_tokens: int, seconds: float) -> None:
        """One llama_decode: prompt tokens read and generated tokens fed back, and its time."""
        self.prompt_tokens += prompt_tokens
        self._steps.append((prompt_tokens, generated_tokens, seconds))

    def ttft(self, seconds: float) -> None:
        self._ttft.append(seconds * 1000)

    def rates(self) -> tuple[float, float]:
        """(prompt tokens/s, generated tokens/s) over the recent steps."""
        prompt = gen = prompt_s = gen_s = 0.0
        for p, g, s in list(self._steps):
            prompt, gen = prompt + p, gen + g
            prompt_s += s * p / max(1, p + g)
            gen_s += s * g / max(1, p + g)
        return (prompt / prompt_s if prompt_s else 0.0), (gen / gen_s if gen_s else 0.0)

    def ttft_ms(self) -> tuple[float, float]:
        values = list(self._ttft)
        return _percentile(values, 0.5), _percentile(values, 0.95)


# The engine's metrics as Prometheus families: (kind, help) by EngineMetrics field.
FIELDS: dict[str, tuple[Literal["counter", "gauge"], str]] = {
    "queue_depth": ("gauge", "generation requests waiting for a slot"),
    "active_streams": ("gauge", "generation streams decoding now"),
    "max_concurrency": ("gauge", "streams decoded together at most (resource.max_concurrency)"),
    "kv_cells_used": ("gauge", "KV cache cells held by streams and the cached system prompt"),
    "kv_cells_total": ("gauge", "KV cache cells of the loaded context"),
    "prompt_tokens_per_s": ("gauge", "prompt tokens read per second over recent decode steps"),
    "generation_tokens_per_s": ("gauge", "tokens generated per second over recent decode steps"),
    "ttft_ms_p50": ("gauge", "median time to first token of recent requests, ms"),
    "ttft_ms_p95": ("gauge", "95th percentile time to first token of recent requests, ms"),
    "requests_total": ("counter", "generation requests accepted"),
    "completed_total": ("counter", "generation requests finished"),
    "cancelled_total": ("counter", "generation streams cancelled by their client"),
    "rejected_busy_total": ("counter", "generation requests refused because the queue was full"),
    "prefix_cache_hits_total": ("counter", "requests that reused the cached system prompt"),
    "prompt_tokens_total": ("counter", "prompt tokens read"),
    "generated_tokens_total": ("counter", "tokens generated"),
    "embed_requests_total": ("counter", "embedding requests served"),
    "embed_texts_total": ("counter", "texts embedded"),
    "embed_skipped_late_total": ("counter", "embedding requests not encoded: their callers had stopped waiting"),
}


def families(metrics: EngineMetrics) -> list[MetricFamily]:
    values = metrics.model_dump()
    out = [MetricFamily(name=f"appliance_engine_{name}", kind=kind, help=text,
                        samples=[MetricSample(value=values[name])]) for name, (kind, text) in FIELDS.items()]
    out.append(MetricFamily(name="appliance_engine_info", kind="gauge", help="the models the engine has loaded",
                            samples=[MetricSample(labels={"chat_model": metrics.chat_model,
                                                          "embedding_model": metrics.embedding_model}, value=1)]))
    return out
