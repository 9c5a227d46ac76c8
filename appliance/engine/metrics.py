"""Counters the decode thread updates and the metrics endpoint reads.

Rates come from the last few hundred decode steps. A step that mixes prompt chunks and
generated tokens is split between the two in proportion to their token counts (llama.cpp
computes them in one pass, so no exact split exists).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

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
