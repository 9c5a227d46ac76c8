"""Per-stream sampling (a llama.cpp sampler chain) and turning tokens into text with stop sequences."""

from __future__ import annotations

import codecs
import random
from dataclasses import dataclass

import llama_cpp

from appliance.engine.llama import LlamaModel


class GrammarError(ValueError):
    """llama.cpp could not compile the grammar; generation must not go ahead unconstrained."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    grammar: str | None = None  # GBNF with a rule named root
    ignore_eos: bool = False  # never sample an end-of-generation token (benchmarks)


class Sampler:
    """A sampler chain: [grammar] -> greedy, or [grammar] -> top-p -> temperature -> seeded draw."""

    def __init__(self, model: LlamaModel, params: SamplingParams) -> None:
        self.ptr = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not grammar:
                self.close()
                raise GrammarError("the grammar did not compile (llama.cpp's log says where)")
            llama_cpp.llama_sampler_chain_add(self.ptr, grammar)
        if params.ignore_eos:
            ends = model.end_tokens()
            biases = (llama_cpp.llama_logit_bias * len(ends))(
                *(llama_cpp.llama_logit_bias(token=t, bias=float("-inf")) for t in ends))
            llama_cpp.llama_sampler_chain_add(
                self.ptr, llama_cpp.llama_sampler_init_logit_bias(model.n_vocab, len(ends), biases))
        if params.temperature == 0.0:
            llama_cpp.llama_sampler_chain_add(self.ptr, llama_cpp.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            llama_cpp.llama_sampler_chain_add(self.ptr, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            llama_cpp.llama_sampler_chain_add(self.ptr, llama_cpp.llama_sampler_init_temp(params.temperature))
            llama_cpp.llama_sampler_chain_add(self.ptr, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx_ptr: llama_cpp.llama_context_p, row: int) -> int:
        """Draw the next token from the logits of batch row ``row`` (the chain also accepts it)."""
        return int(llama_cpp.llama_sampler_sample(self.ptr, ctx_ptr, row))

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_sampler_free(self.ptr)  # frees every sampler added to the chain
            self.ptr = None


class TextStream:
    """Bytes of tokens in, text out: whole UTF-8 characters only, cut at the first stop sequence.

    Text that could still turn into a stop sequence is held back until it cannot, so a client
    never sees the start of a stop string it asked not to see.
    """

    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._sent = 0
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; returns the text that may be sent now."""
        self.text += self._decoder.decode(piece)
        if self._stops:
            start = max(0, self._sent - self._longest)
            hits = [i for s in self._stops if (i := self.text.find(s, start)) >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._take(len(self.text))
            return self._take(len(self.text) - self._held_back())
        return self._take(len(self.text))

    def finish(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _held_back(self) -> int:
        for n in range(min(self._longest - 1, len(self.text) - self._sent), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0

    def _take(self, end: int) -> str:
        out = self.text[self._sent : end]
        self._sent = max(self._sent, end)
        return out
