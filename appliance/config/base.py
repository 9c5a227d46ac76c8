"""What every section of the configuration shares: the base model, the error, default folders."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def default_state_dir() -> Path:
    # systemd's StateDirectory= exports STATE_DIRECTORY; a root developer gets the FHS path,
    # anyone else a per-user directory, so `make run` never needs sudo.
    if env := os.environ.get("STATE_DIRECTORY"):
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/appliance")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(xdg) / "appliance"


def default_runtime_dir() -> Path:
    if env := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/appliance")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "appliance"
    return Path(f"/tmp/appliance-{os.geteuid()}")
