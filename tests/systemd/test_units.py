"""The shipped unit files: `systemd-analyze verify` and the offline security exposure (every unit <= 2.0)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service") if "@" not in p.name)  # the five long-running ones
HELPER = "appliance-sandbox@.service"  # one sandboxed run per connection on appliance-sandbox.socket
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch root with the system's units and an executable at the units' ExecStart path."""
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    launcher = root / "opt/appliance/bin/appliance"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS.glob("appliance*"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    return root


@pytest.mark.parametrize("unit", [*SERVICES, "appliance.target", "appliance-sandbox.socket",
                                  "appliance-sandbox@1.service"])
def test_verify(root: Path, unit: str) -> None:
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", unit],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def exposure(unit: str) -> float:
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNITS / unit)],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-500:]
    return float(match.group(1))


def test_security_exposure(capsys: pytest.CaptureFixture[str]) -> None:
    levels = {unit: exposure(unit) for unit in [*SERVICES, HELPER]}
    with capsys.disabled():
        print("\nsystemd-analyze security --offline=true exposure:")
        for unit, level in levels.items():
            print(f"  {unit:<28} {level:.1f}")
    for unit, level in levels.items():
        assert level <= MAX_EXPOSURE, f"{unit}: exposure {level}"


def test_every_service_is_notify_with_watchdog_and_restart() -> None:
    for unit in SERVICES:
        text = (UNITS / unit).read_text()
        for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "PartOf=appliance.target",
                     "StartLimitBurst=", "User=appliance", "ProtectSystem=strict", "NoNewPrivileges=yes"):
            assert line in text, f"{unit} lacks {line}"


def test_the_sandbox_helper_keeps_only_what_bwrap_and_setpriv_need() -> None:
    text = (UNITS / HELPER).read_text()
    assert "User=" not in text  # root: the agent's unit may not make namespaces or mount
    for line in ("CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_SETGID CAP_SETPCAP\n",
                 "StandardInput=socket", "PrivateNetwork=yes", "RestrictAddressFamilies=none", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "RestrictNamespaces=mnt pid ipc net\n"):
        assert line in text, f"{HELPER} lacks {line!r}"
    socket_unit = (UNITS / "appliance-sandbox.socket").read_text()
    assert all(line in socket_unit for line in ("SocketGroup=appliance", "SocketMode=0660", "Accept=yes"))
    agent = (UNITS / "appliance-agent.service").read_text()
    assert "Wants=appliance-sandbox.socket" in agent and "After=appliance-sandbox.socket" in agent
