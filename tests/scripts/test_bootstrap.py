"""scripts/bootstrap.sh, the first step of `make run` and `make test`, on its bad paths.

Each case runs the real script against a package list written by the test. The apt-get
failure is real too: apt-get is asked for a package no archive has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh"


def bootstrap(packages: str, tmp_path: Path, *, what: str = "run", env: dict[str, str] | None = None,
              user: str | None = None) -> subprocess.CompletedProcess[str]:
    # Another user must be able to read the list: pytest's own tmp folders are owner-only.
    folder = Path(tempfile.mkdtemp(dir=tmp_path if user is None else None))
    folder.chmod(0o755)
    listing = folder / "packages.txt"
    listing.write_text(packages)
    listing.chmod(0o644)
    script = folder / SCRIPT.name  # the checkout may be unreadable to that user (under /root)
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    command = ["bash", str(script), what]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, **(env or {}), "BOOTSTRAP_PACKAGES": str(listing)})
    finally:
        shutil.rmtree(folder)


def test_nothing_missing_is_quick_and_silent(tmp_path: Path) -> None:
    started = time.monotonic()
    result = bootstrap("[run]\nbash  # present everywhere\n[test]\ncoreutils\n", tmp_path, what="test")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert time.monotonic() - started < 5  # generous: the point is that apt is never run


def test_sections_pick_what_is_checked(tmp_path: Path) -> None:
    listing = "[run]\nbash\n[test]\nno-such-package-appliance-test\n"
    assert bootstrap(listing, tmp_path, what="run", user="65534").returncode == 0
    result = bootstrap(listing, tmp_path, what="test", user="65534")
    assert result.returncode == 1
    assert "no-such-package-appliance-test" in result.stderr


def test_unknown_argument_is_usage(tmp_path: Path) -> None:
    result = bootstrap("[run]\nbash\n", tmp_path, what="everything")
    assert result.returncode == 2 and "usage" in result.stderr


def test_without_dpkg_it_names_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    result = bootstrap("[run]\nmosquitto\nbubblewrap\n", tmp_path, env={"PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "not a Debian-like system" in result.stderr
    assert "mosquitto bubblewrap" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_neither_root_nor_sudo_prints_the_command(tmp_path: Path) -> None:
    result = bootstrap("[run]\nno-such-package-appliance-test\n", tmp_path, user="65534",
                       env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "cannot use sudo" in result.stderr
    assert "apt-get install -y --no-install-recommends no-such-package-appliance-test" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get install needs root")
def test_failed_apt_get_stops_non_zero_and_shows_its_error(tmp_path: Path) -> None:
    result = bootstrap("[run]\nno-such-package-appliance-test\n", tmp_path)
    assert result.returncode == 1
    assert "apt-get" in result.stderr and "failed" in result.stderr
    # apt's own words reach the user, whichever step failed.
    assert "E:" in result.stderr or "Unable to locate" in result.stderr
