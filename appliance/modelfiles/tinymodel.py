"""Write tiny but complete GGUF models: llama architecture, random weights, byte-level tokenizer.

They exist so that the real loading and decoding code can run where no model weights can be
downloaded: in tests, in CI and in `make run`'s demo. Their output is noise by construction.
llama.cpp treats them exactly like a real model of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# A minimal chat template so chat-formatted prompts work like they do with a real model.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyShape:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 4096
    n_vocab: int = 259  # above 259, filler word pieces pad the byte vocabulary to this size
    quant: str = "F32"  # or "Q8_0": matrices quantized the way llama.cpp's Q8_0 files are


CHAT_SHAPE = TinyShape()
# Shaped like a ~0.5B llama (TinyLlama's widths, 24 blocks, a 32k vocabulary) for benchmarks:
# random weights cost exactly the compute of trained ones.
BENCH_SHAPE = TinyShape(n_embd=1024, n_layer=24, n_head=16, n_head_kv=4, n_ff=5632, n_ctx_train=8192,
                        n_vocab=32000, quant="Q8_0")


def embedding_shape(dim: int) -> TinyShape:
    """A one-layer model whose hidden size, and so its pooled embedding, is ``dim``."""
    heads = next((h for h in (8, 6, 4, 2, 1) if dim % h == 0 and (dim // h) % 2 == 0), None)
    if heads is None:
        raise ValueError(f"a demo embedding model needs an even dimension, not {dim}")
    return TinyShape(n_embd=dim, n_layer=1, n_head=heads, n_head_kv=heads, n_ff=2 * dim, n_ctx_train=512)


def byte_vocab(size: int = 259) -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style vocabulary of three specials and the 256 byte-fallback tokens,
    padded to ``size`` with distinct filler pieces."""
    types = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(size - len(tokens))]
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    kinds = [types.UNKNOWN, types.CONTROL, types.CONTROL] + [types.BYTE] * 256 + [types.NORMAL] * (len(tokens) - 259)
    return tokens, scores, [int(k) for k in kinds]


def write_tiny_llama(path: Path, shape: TinyShape = CHAT_SHAPE, seed: int = 0,
                     name: str = "tiny-llama") -> Path:
    rng = np.random.default_rng(seed)
    tokens, scores, kinds = byte_vocab(shape.n_vocab)
    n_vocab = len(tokens)
    head_dim = shape.n_embd // shape.n_head
    kv_dim = head_dim * shape.n_head_kv

    quant = gguf.GGMLQuantizationType[shape.quant]

    def weight(name: str, *dims: int) -> None:
        # numpy order is (rows=out, cols=in); gguf stores the reverse, as llama.cpp expects.
        data = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
        if quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if shape.quant == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    weight("token_embd.weight", n_vocab, shape.n_embd)
    writer.add_tensor("output_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
    weight("output.weight", n_vocab, shape.n_embd)
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        weight(f"{blk}.attn_q.weight", shape.n_embd, shape.n_embd)
        weight(f"{blk}.attn_k.weight", kv_dim, shape.n_embd)
        weight(f"{blk}.attn_v.weight", kv_dim, shape.n_embd)
        weight(f"{blk}.attn_output.weight", shape.n_embd, shape.n_embd)
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        weight(f"{blk}.ffn_gate.weight", shape.n_ff, shape.n_embd)
        weight(f"{blk}.ffn_up.weight", shape.n_ff, shape.n_embd)
        weight(f"{blk}.ffn_down.weight", shape.n_embd, shape.n_ff)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)  # a half-written model is never visible under the real name
    return path
