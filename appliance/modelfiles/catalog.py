"""The models on this box: <state_dir>/models/*.gguf, and manifest.json recording what each is.

Import copies (a GGUF) or converts (a sentence-transformers folder) into a temporary file,
validates it, trial-loads it in a child process, records size and sha256, and only then gives
it its name. Making a model the default points the fixed names the engine loads, chat.gguf
or embedding.gguf, at it with a symlink replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.modelfiles.convert_bert import convert_bert
from appliance.modelfiles.gguf_info import ModelFileError, ModelKind, read_model_info
from appliance.modelfiles.trial import run_trial

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_NAMES: dict[ModelKind, str] = {"chat": "chat.gguf", "embedding": "embedding.gguf"}
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str
    kind: ModelKind
    arch: str
    size_bytes: int
    sha256: str
    source: str
    imported_at: float
    check: str = ""


class Catalog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = directory / "manifest.json"

    def entries(self) -> dict[str, ModelEntry]:
        try:
            raw: dict[str, dict[str, Any]] = json.loads(self.manifest.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ModelFileError(f"{self.manifest}: corrupt ({exc}); move it away to start a new one") from None
        return {name: ModelEntry(**data) for name, data in raw.items()}

    def _save(self, entries: dict[str, ModelEntry]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest.with_name(self.manifest.name + ".tmp")
        tmp.write_text(json.dumps({n: asdict(e) for n, e in sorted(entries.items())}, indent=1) + "\n")
        tmp.replace(self.manifest)

    def default_target(self, kind: ModelKind) -> str | None:
        link = self.directory / DEFAULT_NAMES[kind]
        return str(link.readlink()) if link.is_symlink() else (link.name if link.exists() else None)

    def import_model(self, source: Path, *, name: str | None = None, make_default: bool = False,
                     progress: Progress | None = None) -> ModelEntry:
        name = self.check_name(name or source.name.removesuffix(".gguf"))
        staging = self.staging(name)
        reference = source if source.is_dir() else None
        try:
            if reference is not None:
                convert_bert(source, staging, name=name, progress=progress)
            else:
                read_model_info(source)  # refuse a broken file before copying gigabytes
                _copy(source, staging, progress)
            return self.admit(staging, name=name, source=str(source.resolve()), reference=reference,
                              make_default=make_default)
        finally:
            staging.unlink(missing_ok=True)

    def check_name(self, name: str) -> str:
        if not NAME.fullmatch(name):
            raise ModelFileError(f"--name: {name[:40]!r} is not 1-64 of [A-Za-z0-9._-]")
        if name + ".gguf" in DEFAULT_NAMES.values():
            raise ModelFileError(f"--name: {name!r} is reserved for the default link")
        return name

    def staging(self, name: str) -> Path:
        """Where a model is written before it is checked (a dot file: never loaded, never listed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f".{name}.gguf.importing"

    def admit(self, staging: Path, *, name: str, source: str, reference: Path | None = None,
              make_default: bool = False) -> ModelEntry:
        """Validate and trial-load the file at ``staging``, then give it its name and record it."""
        final = self.directory / f"{name}.gguf"
        info = read_model_info(staging)
        trial = run_trial(staging, reference)
        if not trial.get("ok"):
            detail = trial.get("detail") or f"embeddings differ from the reference: cosines {trial.get('cosines')}"
            raise ModelFileError(f"{source}: {detail}")
        entry = ModelEntry(name=name, file=final.name, kind=info.kind, arch=info.arch,
                           size_bytes=staging.stat().st_size, sha256=sha256_of(staging),
                           source=source, imported_at=time.time(), check=_describe(trial))
        staging.replace(final)
        entries = self.entries()
        entries[name] = entry
        self._save(entries)
        if make_default:
            self.make_default(entry)
        return entry

    def make_default(self, entry: ModelEntry) -> None:
        link = self.directory / DEFAULT_NAMES[entry.kind]
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(entry.file)
        tmp.replace(link)

    def listing(self) -> list[dict[str, Any]]:
        """Every model file here: manifest entries, and files put here by other means."""
        entries = self.entries()
        defaults = {self.default_target(k): k for k in DEFAULT_NAMES}
        rows = [{**asdict(e), "default": defaults.get(e.file, "")} for e in entries.values()]
        known = {e.file for e in entries.values()} | set(DEFAULT_NAMES.values())
        for path in sorted(self.directory.glob("*.gguf")):
            if path.name in known:
                continue
            try:
                kind: str = read_model_info(path).kind
            except ModelFileError:
                kind = "unreadable"
            rows.append({"name": path.stem, "file": path.name, "kind": kind, "size_bytes": path.stat().st_size,
                         "sha256": "", "source": "not imported", "default": ""})
        for kind, file in DEFAULT_NAMES.items():
            path = self.directory / file
            if path.exists() and not path.is_symlink():
                rows.append({"name": path.stem, "file": file, "kind": kind, "size_bytes": path.stat().st_size,
                             "sha256": "", "source": "placed directly (not imported)", "default": kind})
        return rows


def _describe(trial: dict[str, Any]) -> str:
    if "min_cosine" in trial:
        count = len(trial["cosines"])
        return f"embeddings match the reference pass: min cosine {trial['min_cosine']} over {count} sentences"
    return str(trial.get("detail") or f"loaded; {trial.get('dim', '?')}-dim embeddings")


def _copy(source: Path, target: Path, progress: Progress | None) -> None:
    total = source.stat().st_size
    done = 0
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        dst.flush()
        os.fsync(dst.fileno())
    shutil.copystat(source, target)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()
