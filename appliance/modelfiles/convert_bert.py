"""Convert a sentence-transformers BERT folder (safetensors, vocab.txt, config) to a GGUF file.

Written on the `gguf` package, in the layout llama.cpp's "bert" architecture reads: WordPiece
vocabulary in "phantom space" form (word-initial pieces get a leading U+2581, "##" pieces lose
their marker, [special] tokens stay as they are), [CLS] as BOS and [SEP] appended, no causal
mask, mean pooling, and HF tensor names mapped by gguf's own BERT name table. Matrices are
stored as F16 (or F32), biases and norms as F32, as llama.cpp's converter does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from appliance.modelfiles.gguf_info import ModelFileError

OutType = Literal["f16", "f32"]
SKIPPED = ("embeddings.position_ids", "pooler.", "cls.")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ADDED_TABLES = ("position_embd.weight", "token_types.weight")
MAX_SEQ_KEY = "sentence_transformers.max_seq_length"


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing (a sentence-transformers folder has it)") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


def _pooling(folder: Path) -> int:
    pooling = folder / "1_Pooling" / "config.json"
    if not pooling.exists():
        return int(gguf.PoolingType.MEAN)
    config = _json(pooling)
    if config.get("pooling_mode_mean_tokens"):
        return int(gguf.PoolingType.MEAN)
    if config.get("pooling_mode_cls_token"):
        return int(gguf.PoolingType.CLS)
    raise ModelFileError(f"{pooling}: only mean or CLS pooling is supported")


def _vocab(folder: Path, expected: int) -> tuple[list[str], list[int]]:
    path = folder / "vocab.txt"
    try:
        words = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing (BERT's WordPiece vocabulary)") from None
    if len(words) != expected:
        raise ModelFileError(f"{path}: {len(words)} tokens, but config.json says vocab_size {expected}")
    missing = [s for s in SPECIALS if s not in words]
    if missing:
        raise ModelFileError(f"{path}: lacks the special tokens {', '.join(missing)}")
    tokens, kinds = [], []
    for word in words:
        if word.startswith("[") and word.endswith("]"):
            tokens.append(word)
            kinds.append(int(gguf.TokenType.CONTROL))
        else:
            tokens.append(word[2:] if word.startswith("##") else "\u2581" + word)
            kinds.append(int(gguf.TokenType.NORMAL))
    return tokens, kinds


def convert_bert(folder: Path, out: Path, *, outtype: OutType = "f16", name: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``folder``'s model to ``out`` (atomically); ``progress(done, total)`` per tensor."""
    config = _json(folder / "config.json")
    if config.get("model_type") != "bert":
        raise ModelFileError(f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}; "
                             "only BERT-family sentence encoders can be converted")
    tokenizer = _json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    if tokenizer.get("do_lower_case", True) is False:
        raise ModelFileError(f"{folder}: a cased vocabulary; llama.cpp's WordPiece tokenizer lower-cases")
    try:
        n_layer, n_embd = int(config["num_hidden_layers"]), int(config["hidden_size"])
        n_head, n_ff = int(config["num_attention_heads"]), int(config["intermediate_size"])
        n_ctx, n_vocab = int(config["max_position_embeddings"]), int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{folder / 'config.json'}: missing or bad key {exc}") from None
    try:
        weights = load_file(str(folder / "model.safetensors"))
    except FileNotFoundError:
        raise ModelFileError(f"{folder / 'model.safetensors'}: missing (only safetensors weights are read)") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{folder / 'model.safetensors'}: corrupt: {exc}") from None
    tokens, kinds = _vocab(folder, n_vocab)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    wanted = {k: v for k, v in weights.items() if not k.removeprefix("bert.").startswith(SKIPPED)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "bert")
    writer.add_name(name or folder.name)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_block_count(n_layer)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(_pooling(folder)))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    for key, special in (("bos", "[CLS]"), ("sep", "[SEP]"), ("unk", "[UNK]"), ("pad", "[PAD]"), ("mask", "[MASK]")):
        getattr(writer, f"add_{key}_token_id")(tokens.index(special))
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists() and isinstance(limit := _json(sbert).get("max_seq_length"), int) and 0 < limit <= n_ctx:
        # The length the model was trained to embed; the embedder cuts longer texts here.
        writer.add_uint32(MAX_SEQ_KEY, limit)
    try:
        for done, (hf_name, data) in enumerate(wanted.items(), 1):
            target = names.get_name(hf_name.removeprefix("bert."), try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ModelFileError(f"{folder}: tensor {hf_name} has no place in llama.cpp's BERT layout")
            # Only matrices that llama.cpp multiplies or looks rows up in may be F16; the position and
            # token-type tables are added to activations, and the CPU backend adds F32 only.
            half = outtype == "f16" and data.ndim == 2 and target not in ADDED_TABLES
            array = data.astype(np.float16 if half else np.float32)
            writer.add_tensor(target, array)
            if progress is not None:
                progress(done, len(wanted))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
