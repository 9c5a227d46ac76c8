"""`appliance update install|status`: a signed bundle into the other root slot, and where the box stands.

Runs as root on the image (it writes a partition and the ESP). A URL is downloaded first to the data
partition (bounded), then checked whole like a file (appliance/update/bundle.py) before the slot is
touched (appliance/update/slots.py); the box then reboots into the new slot on trial.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.cli.base import EXIT_BAD_INPUT, CliError, fail, run_command
from appliance.config import ApplianceConfig
from appliance.control.update import KEYS, status_of, update_folder
from appliance.store.rollback import PRE_UPDATE_BACKUP
from appliance.update.bundle import BundleError, inspect, load_public_keys
from appliance.update.progress import State, recover
from appliance.update.slots import Layout, install

DOWNLOAD_MAX_BYTES = 4 * 2**30


def register(commands: Any) -> None:
    group = commands.add_parser("update", help="install a signed update bundle (A/B slots; image only)")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    install_ = actions.add_parser("install", help="check a bundle, write it to the other slot, reboot into it")
    install_.add_argument("source", nargs="?", help="a bundle file, or an http(s) URL of one")
    install_.add_argument("--request", type=Path, metavar="FILE",
                          help="install what the api handed over (request.json; appliance-update.service)")
    install_.add_argument("--allow-downgrade", action="store_true", help="install a version not newer than this one")
    install_.add_argument("--no-reboot", action="store_true", help="leave the reboot to later")
    install_.add_argument("--keys", type=Path, default=KEYS, help=f"trusted public keys (default {KEYS})")
    install_.add_argument("--esp", type=Path, default=Path("/efi"), help="where the ESP is mounted")
    install_.set_defaults(handler=_install)
    recover = actions.add_parser("recover", help="at boot: an install that a restart interrupted is reported failed, "
                                 "its request and upload removed (appliance-update-recover.service)")
    recover.set_defaults(handler=_recover)
    status = actions.add_parser("status", help="running slot and version, loader entries, the last boot's verdict")
    status.add_argument("--esp", type=Path, default=Path("/efi"))
    status.set_defaults(handler=_status)


def _install(config: ApplianceConfig, args: argparse.Namespace) -> int:
    folder = update_folder(config.paths.state_dir)
    source, allow_downgrade = args.source, args.allow_downgrade
    if args.request is not None:
        try:
            request = json.loads(args.request.read_text())
            source, allow_downgrade = str(request["bundle"]), bool(request.get("allow_downgrade", False))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            args.request.unlink(missing_ok=True)
            fail(f"{args.request}: not an update request ({exc})", code=EXIT_BAD_INPUT)
    if not source:
        fail("give a bundle FILE or URL (or --request FILE)")
    state = State(folder)
    try:
        layout = Layout.of_box(esp=args.esp)
        path = _local(source, folder)
        checked = inspect(path, trusted=load_public_keys(args.keys), running_version=__version__,
                          arch=platform.machine(), slot_bytes=layout.slot_bytes(layout.other),
                          allow_downgrade=allow_downgrade)
        version = checked.manifest.version
        state.write("installing", version, 0.0, f"verified with {checked.key_name}; backing the memory up")
        backed_up = _back_up_memory(config)
        state.write("installing", version, 0.0, f"{backed_up}; writing slot {layout.other}")
        sys.stdout.write(f"{backed_up}\n")
        sys.stdout.write(f"bundle {version} ({checked.manifest.build}) verified with {checked.key_name}; "
                         f"writing slot {layout.other}\n")

        def progress(done: int, total: int, what: str) -> None:
            fraction = done / max(total, 1)
            if state.progress_due(fraction):
                state.write("installing", version, fraction, what)
                sys.stdout.write(f"  {what}: {100 * fraction:.0f}%\n")
                sys.stdout.flush()

        entry = install(checked, layout, progress)
    except (BundleError, OSError) as exc:
        state.write("failed", None, None, f"update refused: {exc}" if isinstance(exc, BundleError)
                    else f"update failed: {exc}")
        fail(f"update refused: {exc}" if isinstance(exc, BundleError) else f"update failed: {exc}",
             code=EXIT_BAD_INPUT if isinstance(exc, BundleError) else 1)
    finally:
        if args.request is not None:
            args.request.unlink(missing_ok=True)
            Path(source or "").unlink(missing_ok=True)
    detail = (f"slot {layout.other} holds {version}; loader entry {entry.name} (tried at most 3 times, kept only "
              "when the appliance says it is healthy)")
    state.write("installed", version, 1.0, detail + ("" if args.no_reboot else "; rebooting into it"))
    sys.stdout.write(detail + "\n")
    if not args.no_reboot:
        sys.stdout.write("rebooting into it\n")
        subprocess.run(["systemctl", "reboot"], check=False)
    return 0


def _recover(config: ApplianceConfig, _: argparse.Namespace) -> int:
    if recover(update_folder(config.paths.state_dir)):
        sys.stdout.write("an install interrupted by a restart is reported failed\n")
    return 0


def _back_up_memory(config: ApplianceConfig) -> str:
    """The memory file's online backup, which the store restores if this update is rolled back after
    migrating it (appliance/store/rollback.py). Without a running store there is none, and an older
    backup is removed rather than left to be restored over newer data."""
    backup = config.paths.state_dir / PRE_UPDATE_BACKUP
    try:
        done = run_command(config, "memory.backup", {"path": str(backup)})
    except CliError as exc:
        backup.unlink(missing_ok=True)
        return f"no pre-update backup of the memory ({exc}); a rollback keeps the file as the update leaves it"
    return f"memory backed up before the update ({getattr(done, 'bytes', 0):,} bytes, {backup.name})"


def _local(source: str, folder: Path) -> Path:
    """A file as is; a URL downloaded (at most DOWNLOAD_MAX_BYTES) into `folder`."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme not in ("http", "https"):
        path = Path(source)
        if not path.is_file():
            raise BundleError(f"{source[:200]}: no such file")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "download.bundle"
    with urllib.request.urlopen(source, timeout=30) as reply, target.open("wb") as out:  # noqa: S310 - http(s) only
        length = int(reply.headers.get("Content-Length") or 0)
        if length > DOWNLOAD_MAX_BYTES:
            raise BundleError(f"{source[:200]}: {length:,} bytes, more than a bundle may be")
        copied = 0
        while chunk := reply.read(1024 * 1024):
            copied += len(chunk)
            if copied > DOWNLOAD_MAX_BYTES:
                raise BundleError(f"{source[:200]}: more than {DOWNLOAD_MAX_BYTES:,} bytes, more than a bundle may be")
            out.write(chunk)
    return target


def _status(config: ApplianceConfig, args: argparse.Namespace) -> int:
    try:
        layout = Layout.of_box(esp=args.esp)
    except BundleError as exc:
        fail(str(exc), code=1)
    report = {**status_of(update_folder(config.paths.state_dir)).model_dump(mode="json"),
              "entries": {slot: {"file": path.name, "tries_left": left}
                          for slot, (path, left) in layout.entries().items()},
              "esp_free_bytes": shutil.disk_usage(layout.esp).free}
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0
