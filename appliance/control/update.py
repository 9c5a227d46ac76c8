"""Updates over the API: an admin uploads a signed bundle, the box checks it, a root service installs it.

The api runs unprivileged, so installing is split in two (image/README.md, "Updates"):

1. `system.update` (here, in the api): the uploaded bundle is checked whole, read-only, with the same
   code the installer uses (appliance/update/bundle.py): a bad signature, another architecture, an
   older version, a truncated file or one larger than the slot is refused at once with the reason
   (400, field `bundle`) and deleted. A good one is handed over by writing `request.json` into the
   update folder; the image's `appliance-update.path` unit starts the root installer on it.
2. `appliance update install --request FILE` (root, appliance-update.service) checks it again,
   writes the other slot (appliance/update/slots.py), records its progress in `state.json`, reboots.

`system.update_status` reads what both wrote: the installer's state, the last boot's verdict (the
image's self-check), the running slot and version. Off the image (a development checkout) updates
are refused with 409: there is no slot to write.
"""

from __future__ import annotations

import asyncio
import json
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from appliance import __version__
from appliance.control.caller import Permission
from appliance.control.command import Command, Context, Effect, HttpRoute, command
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Message
from appliance.update.bundle import BundleError, inspect, load_public_keys
from appliance.update.slots import running_slot

RELEASE = Path("/etc/appliance-release")  # written into the image's root by image/customize.sh
IMAGE_INFO = Path("/usr/share/appliance/image.json")  # the slot size, among others
KEYS = Path("/usr/share/appliance/update-keys")
BUNDLE_MAX_BYTES = 4 * 2**30
UpdateState = Literal["idle", "requested", "installing", "installed", "failed"]


def update_folder(state_dir: Path) -> Path:
    """Where the installer and the self-check write (state.json, boot.json) and the api hands over."""
    return state_dir / "update"


def uploads_folder(state_dir: Path) -> Path:
    """Where REST stores a bundle it receives (HttpRoute.body_file)."""
    return state_dir / "update" / "uploads"


class UpdateIn(Message):
    bundle: str = Field(min_length=1, max_length=4096,
                        description="the uploaded bundle (REST: the request body itself, application/octet-stream)")
    allow_downgrade: bool = Field(False, description="install a version not newer than the running one")


class UpdateStatus(Message):
    running_version: str
    running_slot: str | None = Field(description="a or b; null off the image")
    state: UpdateState
    version: str | None = Field(None, description="the bundle being installed or last installed")
    progress: float | None = Field(None, ge=0, le=1)
    detail: str = ""
    last_boot: dict[str, Any] | None = Field(None, description="the last boot's self-check verdict")
    boots: list[dict[str, Any]] = Field(default_factory=list,
                                        description="the last boots' verdicts, oldest first (a rollback shows here)")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def status_of(folder: Path) -> UpdateStatus:
    """What the installer and the self-check wrote; a state file that does not read as one is reported as
    such, never as an error of the health or status request that reads it."""
    state = _read_json(folder / "state.json") or {}
    requested = (folder / "request.json").exists()
    common = {"running_version": __version__, "running_slot": running_slot(),
              "last_boot": _read_json(folder / "boot.json"), "boots": _boots(folder / "boots.jsonl")}
    try:
        return UpdateStatus(
            state="requested" if requested and state.get("state") != "installing" else state.get("state", "idle"),
            version=state.get("version"), progress=state.get("progress"),
            detail=str(state.get("detail", ""))[:2000], **common)
    except ValidationError as exc:
        return UpdateStatus(state="failed", detail=f"{folder / 'state.json'} is not an update state: "
                            f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", **common)


def _boots(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()[-20:]
    except OSError:
        return []
    boots = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            boots.append(value)
    return boots


async def update_status(ctx: Context, _: Empty) -> UpdateStatus:
    return await asyncio.to_thread(status_of, update_folder(ctx.config.paths.state_dir))


async def update(ctx: Context, body: UpdateIn) -> UpdateStatus:
    state_dir = ctx.config.paths.state_dir
    return await asyncio.to_thread(request_install, update_folder(state_dir), uploads_folder(state_dir), body,
                                   ctx.caller.subject)


def request_install(folder: Path, uploads: Path, body: UpdateIn, requested_by: str) -> UpdateStatus:
    """Check the uploaded bundle (refused: deleted, and the reason); hand a good one to the installer."""
    bundle = Path(body.bundle).resolve()
    if bundle.parent != uploads.resolve():
        raise CommandError("bad_request", Phrase("update.upload_needed"), field="bundle")
    try:
        if not RELEASE.exists():
            raise CommandError("conflict", Phrase("update.not_on_image"))
        if status_of(folder).state in ("requested", "installing"):
            raise CommandError("conflict", Phrase("update.in_progress"))
        slot_bytes = int((_read_json(IMAGE_INFO) or {}).get("slot_mib", 0)) * 2**20
        try:
            checked = inspect(bundle, trusted=load_public_keys(KEYS), running_version=__version__,
                              arch=platform.machine(), slot_bytes=slot_bytes, allow_downgrade=body.allow_downgrade)
        except BundleError as exc:
            raise CommandError("bad_request", Phrase("update.refused", why=str(exc)), field="bundle") from None
    except CommandError:
        bundle.unlink(missing_ok=True)
        raise
    request = {"bundle": str(bundle), "allow_downgrade": body.allow_downgrade, "version": checked.manifest.version,
               "requested_by": requested_by}
    partial = folder / "request.json.partial"
    partial.write_text(json.dumps(request))
    partial.replace(folder / "request.json")  # the path unit wakes on the whole file only
    return status_of(folder)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("system.update", "Install a signed update bundle into the other root slot, then reboot into it "
            "(kept only if the box says it is healthy).", UpdateIn, UpdateStatus, Permission.ADMIN, update,
            effect=Effect.ACTUATE, surfaces=frozenset({"rest"}),
            http=(HttpRoute("POST", "/api/v1/system/update", status=202, max_body_bytes=BUNDLE_MAX_BYTES,
                            body_file="bundle"),)),
    command("system.update_status", "The update state: running slot and version, an install in progress, the "
            "last boot's verdict.", Empty, UpdateStatus, Permission.VIEWER, update_status, effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/system/update"),)),
)
