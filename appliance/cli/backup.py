"""`appliance backup FILE` and `appliance restore FILE`: the whole box's state (backup/archive.py).

The memory file is copied by the running store (memory.backup, consistent while it serves), or
read directly when the store is stopped. Restore refuses while any service answers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.backup.archive import BackupError, make_backup, restore
from appliance.cli.base import fail, run_command
from appliance.config import ApplianceConfig
from appliance.store.offline import copy_database, services_answering


def register(commands: Any) -> None:
    backup = commands.add_parser("backup", help="the whole box's state (memory, accounts, keys, config) in one file")
    backup.add_argument("path", type=Path, help="where to write it (a .tar.gz, mode 0600: it holds private keys)")
    backup.add_argument("--with-models", action="store_true", help="the model files too (gigabytes)")
    backup.set_defaults(handler=_backup)
    restore_ = commands.add_parser("restore", help="put a backup of `appliance backup` in place (services stopped)")
    restore_.add_argument("path", type=Path)
    restore_.set_defaults(handler=_restore)


def _copy_memory(config: ApplianceConfig) -> Callable[[Path], None]:
    def copy(target: Path) -> None:
        if services_answering(config, ("store",)):
            run_command(config, "memory.backup", {"path": str(target)})
            return
        live = config.memory_dir / "memory.db"
        if not live.is_file():
            fail(f"{live}: no memory file yet (the store has never run)")
        copy_database(live, target)

    return copy


def _backup(config: ApplianceConfig, args: argparse.Namespace) -> int:
    target = args.path.resolve()
    if not target.parent.is_dir():
        fail(f"{target.parent}: no such folder")
    try:
        manifest = make_backup(config, args.config_path.resolve(), target, with_models=args.with_models,
                               copy_memory=_copy_memory(config))
    except BackupError as exc:
        fail(str(exc), exc.code)
    size = sum(entry["size"] for entry in manifest["files"].values())
    sys.stdout.write(f"backed up {len(manifest['files'])} files ({size / 2**20:.1f} MiB before compression; memory: "
                     f"{manifest['memory']}) to {target}; it holds this box's private keys: keep it safe\n")
    return 0


def _restore(config: ApplianceConfig, args: argparse.Namespace) -> int:
    try:
        manifest = restore(config, args.config_path.resolve(), args.path.resolve(), services_answering(config))
    except BackupError as exc:
        fail(f"restore refused, nothing was changed: {exc}" if exc.code == 2 else str(exc), exc.code)
    sys.stdout.write(f"restored {len(manifest['files'])} files from {args.path} (made by release "
                     f"{manifest['version']}; memory: {manifest['memory']}); start the appliance again\n")
    return 0
