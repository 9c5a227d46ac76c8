"""`appliance update`: off the image it refuses and says why; a request file it cannot read is removed
(so the path unit does not start the installer on it again and again)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli


def test_off_the_image_install_and_status_say_why(config_file: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "x.bundle"
    bundle.write_bytes(b"not a bundle")
    install = cli(config_file, "update", "install", str(bundle), "--no-reboot")
    assert install.returncode == 2 and "not booted from an appliance slot" in install.stderr
    status = cli(config_file, "update", "status")
    assert status.returncode == 1 and "not booted from an appliance slot" in status.stderr
    neither = cli(config_file, "update", "install")
    assert neither.returncode == 2 and "give a bundle FILE or URL" in neither.stderr


def test_a_request_that_is_not_one_is_removed(config_file: Path, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text("{not json")
    result = cli(config_file, "update", "install", "--request", str(request))
    assert result.returncode == 2 and "not an update request" in result.stderr
    assert not request.exists()


def test_an_install_a_restart_interrupted_is_reported_failed_not_resumed(config_file: Path) -> None:
    from appliance.config import load_config

    folder = load_config(config_file).paths.state_dir / "update"
    (folder / "uploads").mkdir(parents=True)
    (folder / "uploads" / "0123.upload").write_bytes(b"half a bundle")
    (folder / "request.json").write_text(json.dumps({"bundle": str(folder / "uploads" / "0123.upload")}))
    (folder / "state.json").write_text(json.dumps({"state": "installing", "version": "0.2.0", "progress": 0.3}))
    result = cli(config_file, "update", "recover")
    assert result.returncode == 0, result.stderr
    state = json.loads((folder / "state.json").read_text())
    assert state["state"] == "failed" and state["version"] == "0.2.0" and "interrupted" in state["detail"]
    assert not (folder / "request.json").exists() and list((folder / "uploads").iterdir()) == []
    quiet = cli(config_file, "update", "recover")  # the next boot: nothing to say
    assert quiet.returncode == 0 and quiet.stdout == ""
