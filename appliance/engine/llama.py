"""A thin, typed layer over llama-cpp-python's low-level bindings (ctypes calls into llama.cpp).

The high-level `llama_cpp.Llama` serves one sequence at a time; the batcher needs
the model, the context and its KV memory directly: one context, several sequence ids, one
`llama_decode` per step. Nothing here is thread-safe: only the batcher's thread calls it.
llama.cpp's own log lines go to this module's logger (journald under systemd).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from appliance.engine.plan import Plan
from appliance.modelfiles.gguf_info import ModelFileError, check_header

log = logging.getLogger("appliance.engine.llama")
# ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the last line.
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _log_from_llama(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    if level in _LEVELS:
        log.log(_LEVELS[level], "llama.cpp: %s", text.decode(errors="replace").rstrip())


llama_cpp.llama_log_set(_log_from_llama, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()


class LoadError(ModelFileError):
    """llama.cpp refused the model or could not allocate the context (usually: out of memory)."""


@dataclass(frozen=True)
class ContextSettings:
    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    n_threads: int
    n_threads_batch: int
    kv_type: str = "f16"
    flash_attn: bool = True
    embeddings: bool = False

    @classmethod
    def from_plan(cls, plan: Plan, n_seq_max: int) -> ContextSettings:
        return cls(n_ctx=plan.n_ctx, n_batch=plan.n_batch, n_ubatch=plan.n_ubatch, n_seq_max=n_seq_max,
                   n_threads=plan.n_threads, n_threads_batch=plan.n_threads_batch, kv_type=plan.kv_type,
                   flash_attn=plan.flash_attn)


def _load_mode(mmap: bool, mlock: bool) -> int:
    if mmap:
        return llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK if mlock else llama_cpp.LLAMA_LOAD_MODE_MMAP
    return llama_cpp.LLAMA_LOAD_MODE_MLOCK if mlock else llama_cpp.LLAMA_LOAD_MODE_NONE


class LlamaModel:
    """Weights and vocabulary; freed with `close`."""

    def __init__(self, path: Path, *, n_gpu_layers: int, use_mmap: bool = True, use_mlock: bool = False,
                 cpu_repack: bool = True) -> None:
        check_header(path)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = cpu_repack
        params.load_mode = _load_mode(use_mmap, use_mlock)
        self.path = path
        self.ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise LoadError(f"{path}: llama.cpp could not load the model (see the log above for why)")
        vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        assert vocab is not None
        self.vocab = vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self.ptr))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.ptr))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self._piece = ctypes.create_string_buffer(256)
        self._ends: list[int] | None = None

    def metadata(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(64 * 1024)
        n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buffer, len(buffer))
        return buffer.value.decode(errors="replace") if n >= 0 else None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:  # the buffer was too small; -n is the size needed
            capacity = -n
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        return list(tokens[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character); specials render empty."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, big, len(big), 0, False)
            return big.raw[:n]
        return self._piece.raw[:n]

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def end_tokens(self) -> list[int]:
        """Every end-of-generation token (EOS, EOT, ...), found once by scanning the vocabulary."""
        if self._ends is None:
            self._ends = [t for t in range(self.n_vocab) if self.is_end(t)]
        return self._ends

    def token_text(self, token: int) -> str:
        text = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return text.decode(errors="replace") if text else ""

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


class LlamaContext:
    """One llama.cpp context: the KV cells shared by all sequences, and the logits of a step."""

    def __init__(self, model: LlamaModel, settings: ContextSettings) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.n_ctx
        params.n_batch = settings.n_batch
        params.n_ubatch = settings.n_ubatch
        params.n_seq_max = settings.n_seq_max
        params.n_threads = settings.n_threads
        params.n_threads_batch = settings.n_threads_batch
        # One pool of cells for every sequence: a request may use all of it, and copying the
        # cached system-prompt prefix to a sequence shares cells instead of duplicating them.
        params.kv_unified = True
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        kv = llama_cpp.GGML_TYPE_Q8_0 if settings.kv_type == "q8_0" else llama_cpp.GGML_TYPE_F16
        params.type_k = params.type_v = kv
        params.embeddings = settings.embeddings
        if settings.embeddings:
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = False
        self.settings = settings
        self.model = model
        self.ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise LoadError(f"{model.path}: llama.cpp could not create a context of {settings.n_ctx} "
                            f"tokens (out of memory?)")
        # Encoder-only models (BERT) have no KV memory at all.
        self.memory = llama_cpp.llama_get_memory(self.ptr)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ptr))

    def forget(self, seq: int, start: int = -1, end: int = -1) -> None:
        if self.memory is not None:
            llama_cpp.llama_memory_seq_rm(self.memory, seq, start, end)

    def share(self, source: int, target: int, end: int) -> None:
        """Give ``target`` the cells of ``source`` for positions [0, end): no copy in a unified cache."""
        assert self.memory is not None
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, 0, end)

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None


class Batch:
    """A reusable llama_batch of up to ``capacity`` tokens, each for one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.size = 0

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its row (the index to sample its logits from)."""
        i = self.size
        self.raw.token[i] = token
        self.raw.pos[i] = pos
        self.raw.n_seq_id[i] = 1
        self.raw.seq_id[i][0] = seq
        self.raw.logits[i] = logits
        self.size += 1
        return i

    def decode(self, ctx: LlamaContext) -> int:
        self.raw.n_tokens = self.size
        return int(llama_cpp.llama_decode(ctx.ptr, self.raw))

    def close(self) -> None:
        if self.capacity:
            llama_cpp.llama_batch_free(self.raw)
            self.capacity = 0
