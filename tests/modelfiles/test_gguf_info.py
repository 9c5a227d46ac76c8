"""GGUF validation: every kind of broken file gets a message naming the file and the fault."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from appliance.modelfiles.gguf_info import ModelFileError, read_model_info
from appliance.modelfiles.tinymodel import write_tiny_llama


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "good.gguf")


def test_reads_shape_and_sizes(good: Path) -> None:
    info = read_model_info(good)
    shape = (info.arch, info.kind, info.n_layer, info.n_embd, info.n_head, info.n_head_kv)
    assert shape == ("llama", "chat", 2, 64, 4, 2)
    assert info.n_vocab == 259 and info.n_ctx_train == 4096 and info.file_type == "F32"
    assert info.weight_bytes <= info.file_bytes and len(info.layer_bytes) == 2


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b"", "not a GGUF file"),
    (lambda b: b[:10], "truncated GGUF header"),
    (lambda b: b"PK\x03\x04" + b[4:], "not a GGUF file"),
    (lambda b: b[:4] + (9).to_bytes(4, "little") + b[8:], "GGUF version 9 is not supported"),
    (lambda b: b[:200], "corrupt or truncated"),
    (lambda b: b[: len(b) // 2], "corrupt or truncated|truncated: tensor"),
    (lambda b: b[:-64], "corrupt or truncated|truncated: tensor"),
])
def test_broken_files_are_named_and_explained(tmp_path: Path, good: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ModelFileError, match=message) as caught:
        read_model_info(bad)
    assert str(bad) in str(caught.value)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        read_model_info(tmp_path / "absent.gguf")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_model_info(tmp_path)


def _write(path: Path, arch: str, tensors: dict[str, np.ndarray], **meta: int) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_token_list(["a", "b", "c", "d"])
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", "mamba", {"token_embd.weight": np.zeros((4, 8), np.float32)})
    with pytest.raises(ModelFileError, match="architecture 'mamba' is not supported"):
        read_model_info(path)


def test_shapes_must_agree_with_the_metadata(tmp_path: Path) -> None:
    meta = {"embedding_length": 8, "block_count": 1, "context_length": 64, "attention.head_count": 2}
    path = _write(tmp_path / "m.gguf", "llama", {"token_embd.weight": np.zeros((4, 16), np.float32)}, **meta)
    with pytest.raises(ModelFileError, match=r"token_embd.weight is \[16, 4\], expected \[8, 4\]"):
        read_model_info(path)
    path = _write(tmp_path / "n.gguf", "llama", {"token_embd.weight": np.zeros((4, 8), np.float32)}, **meta)
    with pytest.raises(ModelFileError, match=r"blk\.0\.attn_q\.weight is missing"):
        read_model_info(path)


def test_missing_metadata_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", "llama", {"token_embd.weight": np.zeros((4, 8), np.float32)},
                  block_count=1, context_length=64)
    with pytest.raises(ModelFileError, match=r"metadata key llama\.embedding_length is missing"):
        read_model_info(path)
