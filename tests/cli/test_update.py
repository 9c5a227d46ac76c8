"""`appliance update`: off the image it refuses and says why; a request file it cannot read is removed
(so the path unit does not start the installer on it again and again)."""

from __future__ import annotations

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
