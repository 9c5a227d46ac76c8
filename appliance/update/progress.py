"""The installer's report (state.json in the update folder) and the boot-time recovery of an install
that a restart interrupted. Standard library only: `python -m appliance.update.progress FOLDER` runs at
every boot on the image (appliance-update-recover.service) and must start fast even on a slow CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


class State:
    """state.json in the update folder: what `system.update_status` reports while the installer works."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shown = -1.0

    def progress_due(self, fraction: float) -> bool:
        if fraction >= self.shown + 0.05:
            self.shown = fraction
            return True
        return False

    def write(self, state: str, version: str | None, progress: float | None, detail: str) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / "state.json.partial"
            partial.write_text(json.dumps({"state": state, "version": version, "progress": progress,
                                           "detail": detail[:2000]}))
            partial.replace(self.folder / "state.json")
        except OSError:
            pass  # a report that cannot be written must not stop the install


def recover(folder: Path) -> bool:
    """Once per boot, before the installer can start: nothing installs at boot. An install that was running
    (power lost, a reboot) wrote no loader entry, so the slot it was writing is not booted; it is reported
    as failed, and its request and upload are removed, so it is not resumed unasked. Whether there was one."""
    request = folder / "request.json"
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):
        state = {}
    interrupted = state.get("state") == "installing" or request.exists()
    request.unlink(missing_ok=True)
    uploads = folder / "uploads"
    for upload in uploads.glob("*.upload") if uploads.is_dir() else []:
        upload.unlink(missing_ok=True)
    if interrupted:
        version = state.get("version")
        State(folder).write("failed", version if isinstance(version, str) else None, None,
                            "interrupted: the box restarted before the install finished; no slot was switched. "
                            "Upload the bundle again.")
    return interrupted


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m appliance.update.progress UPDATE_FOLDER\n")
        raise SystemExit(2)
    if recover(Path(sys.argv[1])):
        sys.stdout.write("an install interrupted by a restart is reported failed\n")
