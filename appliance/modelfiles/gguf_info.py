"""What a GGUF file says about its model, read with the `gguf` package, and whether to trust it.

`read_model_info` is used by the auto-tuner (shape and tensor sizes) and by `appliance model
import` (validation). Every failure is a `ModelFileError` whose message names the file and what
is wrong with it, so a corrupt or truncated download never reaches llama.cpp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

GGUF_MAGIC = b"GGUF"
ModelKind = Literal["chat", "embedding"]

# Architectures this appliance has been run with; others are refused at import rather than
# failing later inside llama.cpp with a less helpful message.
CHAT_ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3",
                                "phi3", "granite", "olmo", "stablelm", "starcoder2", "deepseek2"})
EMBEDDING_ARCHITECTURES = frozenset({"bert", "nomic-bert", "jina-bert-v2"})
Q = gguf.GGMLQuantizationType
SUPPORTED_TYPES = frozenset({
    Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K,
    Q.Q5_K, Q.Q6_K, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ4_NL, Q.IQ4_XS, Q.IQ1_S,
})
_BLOCK = re.compile(r"blk\.(\d+)\.")


class ModelFileError(Exception):
    """The file is missing, unreadable, corrupt, or not a model this appliance can run."""


@dataclass(frozen=True)
class ModelInfo:
    """The numbers the tuner needs. Byte counts are the tensors' sizes as stored."""

    arch: str
    name: str
    file_bytes: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    head_dim_k: int
    head_dim_v: int
    layer_bytes: tuple[int, ...]  # weights of each repeating block, blk.0 first
    output_bytes: int  # the output head (or the tied token embedding it reuses)
    other_bytes: int  # everything else: token embedding, final norm, ...
    file_type: str  # the most common tensor type by bytes, e.g. "Q8_0"
    chat_template: str | None = None

    @property
    def kind(self) -> ModelKind:
        return "embedding" if self.arch in EMBEDDING_ARCHITECTURES else "chat"

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.output_bytes + self.other_bytes

    def kv_bytes_per_token(self, bytes_per_element: float) -> float:
        """K and V of one token across all layers (llama.cpp keeps both per layer)."""
        return self.n_layer * self.n_head_kv * (self.head_dim_k + self.head_dim_v) * bytes_per_element


def _scalar(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _int(reader: gguf.GGUFReader, key: str, path: Path, default: int | None = None) -> int:
    value = _scalar(reader, key)
    if value is None:
        if default is None:
            raise ModelFileError(f"{path}: metadata key {key} is missing")
        return default
    if isinstance(value, list):  # some models store per-layer head counts; the tuner wants the max
        value = max(value) if value else default
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or int(value) <= 0:
        raise ModelFileError(f"{path}: metadata key {key} must be a positive integer, not {value!r}")
    return int(value)


def check_header(path: Path) -> None:
    """Cheap checks with clear messages before anything maps the file."""
    try:
        with path.open("rb") as handle:
            header = handle.read(24)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a GGUF file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror}") from None
    if header[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (starts with {header[:4]!r}, expected b'GGUF')")
    if len(header) < 24:
        raise ModelFileError(f"{path}: truncated GGUF header ({len(header)} bytes)")
    version = int.from_bytes(header[4:8], "little")
    if version not in (2, 3):
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (2 or 3)")


def _open(path: Path) -> gguf.GGUFReader:
    check_header(path)
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, OSError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated GGUF metadata ({exc})") from None


def _check_tensors(reader: gguf.GGUFReader, path: Path, file_bytes: int) -> None:
    for tensor in reader.tensors:
        qtype = Q(tensor.tensor_type)
        if qtype not in SUPPORTED_TYPES:
            raise ModelFileError(f"{path}: tensor {tensor.name} has unsupported type {qtype.name}")
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        elements = int(np.prod(tensor.shape))
        if elements % block:
            raise ModelFileError(f"{path}: tensor {tensor.name} has {elements} elements, "
                                 f"not a multiple of the {qtype.name} block of {block}")
        end = int(tensor.data_offset) + elements // block * type_size
        if end > file_bytes:
            raise ModelFileError(f"{path}: truncated: tensor {tensor.name} ends at byte {end} "
                                 f"but the file has {file_bytes} bytes")


def _check_shapes(reader: gguf.GGUFReader, path: Path, info: ModelInfo) -> None:
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    embd = shapes.get("token_embd.weight")
    if embd is None:
        raise ModelFileError(f"{path}: tensor token_embd.weight is missing")
    if embd != (info.n_embd, info.n_vocab):
        raise ModelFileError(f"{path}: token_embd.weight is {list(embd)}, expected "
                             f"[{info.n_embd}, {info.n_vocab}] from the metadata")
    for i in range(info.n_layer):
        q = shapes.get(f"blk.{i}.attn_q.weight")
        if q is None and f"blk.{i}.attn_qkv.weight" not in shapes:
            raise ModelFileError(f"{path}: tensor blk.{i}.attn_q.weight is missing "
                                 f"(the metadata says {info.n_layer} layers)")
        if q is not None and q[0] != info.n_embd:
            raise ModelFileError(f"{path}: blk.{i}.attn_q.weight takes {q[0]} inputs, "
                                 f"expected the embedding size {info.n_embd}")


def read_model_info(path: Path) -> ModelInfo:
    """Read and validate ``path``: header, architecture, metadata, tensor types, shapes, sizes."""
    reader = _open(path)
    file_bytes = path.stat().st_size
    arch = _scalar(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{path}: metadata key general.architecture is missing")
    if arch not in CHAT_ARCHITECTURES | EMBEDDING_ARCHITECTURES:
        known = ", ".join(sorted(CHAT_ARCHITECTURES | EMBEDDING_ARCHITECTURES))
        raise ModelFileError(f"{path}: architecture {arch!r} is not supported (supported: {known})")
    _check_tensors(reader, path, file_bytes)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    if tokens is None:
        raise ModelFileError(f"{path}: the tokenizer vocabulary (tokenizer.ggml.tokens) is missing")
    n_embd = _int(reader, f"{arch}.embedding_length", path)
    n_head = _int(reader, f"{arch}.attention.head_count", path)
    head_dim = n_embd // n_head
    layer_bytes: dict[int, int] = {}
    output = other = 0
    by_type: dict[str, int] = {}
    for tensor in reader.tensors:
        size = int(tensor.n_bytes)
        by_type[Q(tensor.tensor_type).name] = by_type.get(Q(tensor.tensor_type).name, 0) + size
        if match := _BLOCK.match(tensor.name):
            layer_bytes[int(match[1])] = layer_bytes.get(int(match[1]), 0) + size
        elif tensor.name == "output.weight":
            output = size
        else:
            other += size
    names = {t.name for t in reader.tensors}
    if "output.weight" not in names and arch not in EMBEDDING_ARCHITECTURES:
        output = next((int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight"), 0)
    n_layer = _int(reader, f"{arch}.block_count", path)
    template = _scalar(reader, "tokenizer.chat_template")
    info = ModelInfo(
        arch=arch, name=str(_scalar(reader, "general.name") or path.stem), file_bytes=file_bytes,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_head_kv=_int(reader, f"{arch}.attention.head_count_kv", path, default=n_head),
        n_ff=_int(reader, f"{arch}.feed_forward_length", path, default=4 * n_embd),
        n_vocab=len(tokens.data), n_ctx_train=_int(reader, f"{arch}.context_length", path),
        head_dim_k=_int(reader, f"{arch}.attention.key_length", path, default=head_dim),
        head_dim_v=_int(reader, f"{arch}.attention.value_length", path, default=head_dim),
        layer_bytes=tuple(layer_bytes.get(i, 0) for i in range(n_layer)),
        output_bytes=output, other_bytes=other,
        file_type=max(by_type, key=lambda k: by_type[k]) if by_type else "F32",
        chat_template=template if isinstance(template, str) else None,
    )
    _check_shapes(reader, path, info)
    return info
