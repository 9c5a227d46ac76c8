"""`appliance backup FILE` and `appliance restore FILE`: what makes this box this box, in one tar.

Members, each under a fixed name; a restore writes each one where the configuration in use puts
it, never to a path read from the file, so a crafted backup cannot write anywhere else:
- memory/memory.db: memories, the archive's index, audit, users, tokens, saved schedules, tasks,
  the site model. An online copy by the running store (memory.backup), else a copy of the file;
- keys/...: the token signing keys (state_dir/keys) and keys/memory.key, the memory sealing key
  (memory.key_file, by default in the same folder);
- config/agent.yaml: the configuration file in use; config/schedules.yaml: agent.schedules_file;
- models/...: with --with-models, state_dir/models (the GGUFs and their catalogue; gigabytes);
- manifest.json: the format, the release that wrote it, when, the store's schema, and each
  member's size and sha256.
The file holds the box's private keys: it is written 0600 (whoever has it can sign as this box).

Restore needs every service stopped (it names those running), then:
1. checks everything before writing anything: each member a regular file under one of the names
   above (no "..", no absolute path, no link, no device), listed in the manifest with the size and
   sha256 it has, none listed and missing; a manifest of a format this release reads; a memory
   file that passes SQLite's integrity check with a schema this release reads (store/offline.py);
2. writes each file beside its target and renames it over (keys and models: the folder's files
   replaced as a set), the memory file through SQLite's backup API.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.config import ApplianceConfig
from appliance.modelfiles.catalog import sha256_of
from appliance.store.offline import OfflineError, check_backup, restore_backup

FORMAT = 1
MANIFEST = "manifest.json"
MEMORY = "memory/memory.db"
CONFIG = "config/agent.yaml"
SCHEDULES = "config/schedules.yaml"
MEMORY_KEY = "keys/memory.key"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
MEMBER = re.compile(rf"^(memory/memory\.db|config/agent\.yaml|config/schedules\.yaml|keys(/{_PART}){{1,2}}|"
                    rf"models(/{_PART}){{1,3}})$")
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 10_000


class BackupError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _keys_dir(config: ApplianceConfig) -> Path:
    return config.paths.state_dir / "keys"


def _models_dir(config: ApplianceConfig) -> Path:
    return config.paths.state_dir / "models"


def _files_under(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield f"{prefix}/{path.relative_to(folder).as_posix()}", path


def sources(config: ApplianceConfig, config_path: Path, *, with_models: bool) -> list[tuple[str, Path]]:
    """(member, file) for everything but the memory file, which the caller copies."""
    found = [(CONFIG, config_path)]
    schedules = config.agent.schedules_file
    if schedules is not None and schedules.is_file():
        found.append((SCHEDULES, schedules))
    keys = [(m, p) for m, p in _files_under(_keys_dir(config), "keys") if p != config.memory_key_path]
    if config.memory_key_path.is_file():
        keys.append((MEMORY_KEY, config.memory_key_path))
    found += keys
    if with_models:
        found += list(_files_under(_models_dir(config), "models"))
    for member, _ in found:
        if not MEMBER.match(member):
            raise BackupError(f"{member}: a file name this backup format cannot carry (letters, digits, '.', '_', "
                              "'-'; at most 128 characters a part)")
    return found


def make_backup(config: ApplianceConfig, config_path: Path, out: Path, *, with_models: bool,
                copy_memory: Callable[[Path], None]) -> dict[str, Any]:
    """Write the backup to ``out`` (0600, renamed into place when whole); its manifest.
    ``copy_memory(path)`` writes a consistent copy of the memory file to ``path``."""
    files = sources(config, config_path, with_models=with_models)
    work = config.paths.state_dir / "backups"  # the store, as its own user, writes its copy here
    work.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        owner = config.paths.state_dir.stat()
        os.chown(work, owner.st_uid, owner.st_gid)
    memory_copy = work / f"memory-{os.getpid()}.db"
    partial = out.with_name(f".{out.name}.partial")
    try:
        copy_memory(memory_copy)
        summary = check_backup(memory_copy, config.memory.vector_dim)
        files.append((MEMORY, memory_copy))
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": __version__, "created_at": time.time(), "memory": summary,
            "files": {member: {"size": path.stat().st_size, "sha256": sha256_of(path)} for member, path in files}}
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
            for member, path in files:
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = manifest["files"][member]["size"], int(path.stat().st_mtime), 0o600
                with path.open("rb") as file:
                    tar.addfile(info, file)
        partial.rename(out)
        return manifest
    except OfflineError as exc:
        raise BackupError(f"the memory file's copy is not sound: {exc}") from None
    finally:
        memory_copy.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def _checked_members(tar: tarfile.TarFile) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    members: dict[str, tarfile.TarInfo] = {}
    for count, info in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise BackupError(f"more than {MAX_MEMBERS} members: not a backup of this box")
        if info.name != MANIFEST and not MEMBER.match(info.name):
            raise BackupError(f"member {info.name[:200]!r}: not a name a backup holds (a path outside it, or a file "
                              "this format does not carry)")
        if not info.isfile():
            raise BackupError(f"member {info.name[:200]!r}: not a regular file (a link, folder or device)")
        if info.name in members:
            raise BackupError(f"member {info.name!r} appears twice")
        members[info.name] = info
    if MANIFEST not in members:
        raise BackupError(f"no {MANIFEST}: not a backup made by `appliance backup`")
    if members[MANIFEST].size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{MANIFEST} is {members[MANIFEST].size} bytes, more than {MAX_MANIFEST_BYTES}")
    reader = tar.extractfile(members[MANIFEST])
    assert reader is not None
    try:
        manifest = json.loads(reader.read())
        files = manifest["files"]
        if manifest["format"] != FORMAT:
            raise BackupError(f"{MANIFEST}: format {manifest['format']!r}; this release reads format {FORMAT}")
        listed = {str(name): (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except BackupError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{MANIFEST} is not a backup manifest ({type(exc).__name__}: {exc})") from None
    unlisted = sorted(set(members) - set(listed) - {MANIFEST})
    missing = sorted(set(listed) - set(members))
    if unlisted or missing:
        raise BackupError(f"members and manifest differ: not listed {unlisted[:5]}, listed but missing {missing[:5]}")
    if MEMORY not in listed or CONFIG not in listed:
        raise BackupError(f"the backup lacks {MEMORY if MEMORY not in listed else CONFIG}")
    for name, (size, _) in listed.items():
        if members[name].size != size:
            raise BackupError(f"member {name!r} is {members[name].size} bytes; the manifest says {size}")
    return manifest, members


def _target(config: ApplianceConfig, config_path: Path, member: str) -> Path:
    if member == CONFIG:
        return config_path
    if member == SCHEDULES:
        return config.agent.schedules_file or config_path.with_name("schedules.yaml")
    if member == MEMORY_KEY:
        return config.memory_key_path
    top, _, rest = member.partition("/")
    return (_keys_dir(config) if top == "keys" else _models_dir(config)) / rest


def restore(config: ApplianceConfig, config_path: Path, backup: Path, running: Sequence[str]) -> dict[str, Any]:
    """Check the whole backup, then put it in place; the manifest. ``running``: services that answer."""
    if running:
        raise BackupError(f"stop the appliance first (systemctl stop appliance.target): {', '.join(running)} "
                          "running", code=1)
    if not backup.is_file():
        raise BackupError(f"{backup}: no such file")
    config.paths.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=config.paths.state_dir, prefix=".restore-") as folder:
        staged = Path(folder)
        try:
            with tarfile.open(backup, mode="r:gz") as tar:
                manifest, members = _checked_members(tar)
                needed, free = sum(info.size for info in members.values()), shutil.disk_usage(staged).free
                if needed * 2 > free:  # staged here, then copied beside each target
                    raise BackupError(f"the backup unpacks to {needed:,} bytes; twice that is needed and "
                                      f"{free:,} are free under {config.paths.state_dir}")
                for name, info in members.items():
                    if name == MANIFEST:
                        continue
                    reader = tar.extractfile(info)
                    assert reader is not None
                    digest = hashlib.sha256()
                    path = staged / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("wb") as out:
                        while chunk := reader.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                    if digest.hexdigest() != manifest["files"][name]["sha256"]:
                        raise BackupError(f"member {name!r} does not match its sha256 in the manifest: "
                                          "the file was altered or damaged")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise BackupError(f"{backup}: not a whole backup ({type(exc).__name__}: {exc})") from None
        try:
            check_backup(staged / MEMORY, config.memory.vector_dim)
        except OfflineError as exc:
            raise BackupError(f"{MEMORY}: {exc}") from None
        # Everything checked: now the writes.
        try:
            _put_in_place(config, config_path, staged, members)
        except (OSError, OfflineError) as exc:
            raise BackupError(f"writing failed after every check passed ({exc}): the box may be half restored; "
                              "run the restore again", code=1) from None
    return manifest


def _put_in_place(config: ApplianceConfig, config_path: Path, staged: Path, members: dict[str, Any]) -> None:
    """Write the checked, staged files over the live ones (keys and models: the folder's files as a set)."""
    for top, folder_of in (("keys", _keys_dir(config)), ("models", _models_dir(config))):
        if (staged / top).is_dir() and any(m.startswith(f"{top}/") and m != MEMORY_KEY for m in members):
            for old in list(_files_under(folder_of, top)):
                if old[1] != config.memory_key_path:
                    old[1].unlink()
    for name in members:
        if name in (MANIFEST, MEMORY):
            continue
        target = _target(config, config_path, name)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.restoring")
        shutil.copyfile(staged / name, temporary)
        if target.exists():  # the file it replaces keeps its owner and mode (a config readable by the services)
            before = target.stat()
            temporary.chmod(before.st_mode & 0o777)
            if os.geteuid() == 0:
                os.chown(temporary, before.st_uid, before.st_gid)
        else:
            temporary.chmod(0o600 if name.startswith("keys/") else 0o644)
        temporary.replace(target)
        for made in (target, *target.parents):
            _own_like_state(config, made)
    restore_backup(config, staged / MEMORY)
    for made in config.memory_dir.glob("memory.db*"):
        _own_like_state(config, made)


def _own_like_state(config: ApplianceConfig, path: Path) -> None:
    """As root, a restored file under the state folder belongs to the services' user, as the folder does."""
    state = config.paths.state_dir
    if os.geteuid() == 0 and path.is_relative_to(state) and path.exists():
        owner = state.stat()
        os.chown(path, owner.st_uid, owner.st_gid)
