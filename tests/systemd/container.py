"""Boot systemd 252 as PID 1 in a throwaway container made of an overlay over the host's root.

The recipe (see the foundation issue): a new pid+mount namespace; a tmpfs holding the
overlay's upper and work dirs, so every write lands in RAM; /proc fresh, /sys and /dev bound,
/tmp and /run fresh tmpfs; then chroot and exec systemd with container=other. The host's /,
/etc and /tmp are never written. We talk to it with `nsenter -t PID -m -p -r -w`.

The appliance is installed as the image would install it: a venv at /opt/appliance made
with Debian's /usr/bin/python3, the units in /etc/systemd/system, the config in
/etc/appliance/agent.yaml, the service user created by systemd-sysusers. Only the Python
packages are not re-installed: the development venv's site-packages and the source tree are
bind-mounted read-only into /opt/appliance and added to its path (same CPython 3.11 ABI).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")

BOOT_SCRIPT = r"""
set -eu
B={base}
mount -t tmpfs -o mode=0755 appliance-boot "$B"
mkdir "$B/upper" "$B/work" "$B/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/upper,workdir=$B/work" "$B/root"
R="$B/root"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"

# --- install the appliance into the overlay ---
rm -rf "$R/opt/appliance"
{python} -m venv --without-pip "$R/opt/appliance"
mkdir -p "$R/opt/appliance/deps" "$R/opt/appliance/src/appliance" "$R/opt/appliance/models"
mount --bind -o ro {site} "$R/opt/appliance/deps"
mount --bind -o ro {source} "$R/opt/appliance/src/appliance"
SP=$(ls -d "$R"/opt/appliance/lib/python3*/site-packages)
printf '/opt/appliance/src\n/opt/appliance/deps\n' > "$SP/appliance-dev.pth"
printf '#!/opt/appliance/bin/python\nfrom appliance.cli import main\nmain()\n' > "$R/opt/appliance/bin/appliance"
chmod 755 "$R/opt/appliance/bin/appliance"
cp {stage}/*.gguf "$R/opt/appliance/models/"
chmod 644 "$R"/opt/appliance/models/*
mkdir -p "$R/etc/appliance" "$R/etc/sysusers.d"
cp {stage}/agent.yaml "$R/etc/appliance/agent.yaml"
cp {units}/*.service {units}/*.socket {units}/*.target {stage}/appliance-test-boot.target "$R/etc/systemd/system/"
cp {units}/sysusers.d/appliance.conf "$R/etc/sysusers.d/"
chroot "$R" systemd-sysusers
exec chroot "$R" /usr/bin/env -i container=other /lib/systemd/systemd --system --unit=appliance-test-boot.target
"""


class Container:
    def __init__(self, base: Path, stage: Path) -> None:
        self.base = base
        self.stage = stage
        self.unshare: subprocess.Popen[bytes] | None = None
        self.pid = 0  # systemd's pid as the host sees it

    def boot(self, timeout_s: float = 30.0) -> None:
        script = BOOT_SCRIPT.format(
            base=shlex.quote(str(self.base)), python=SYSTEM_PYTHON,
            site=shlex.quote(sysconfig.get_paths()["purelib"]),
            source=shlex.quote(str(REPO / "appliance")), stage=shlex.quote(str(self.stage)),
            units=shlex.quote(str(REPO / "systemd")))
        log = (self.stage / "boot.log").open("wb")
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "bash", "-c", script],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.unshare.poll() is not None:
                raise RuntimeError(f"container exited early: {(self.stage / 'boot.log').read_text()}")
            children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
            if children and Path(f"/proc/{children[0]}/exe").resolve().name == "systemd":
                self.pid = int(children[0])
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("systemd did not start in the container")
        while time.monotonic() < deadline:  # PID 1 answers once its private socket is up
            if self.run("systemctl", "is-system-running", check=False).stdout.strip():
                return
            time.sleep(0.2)
        raise RuntimeError("systemd in the container never answered")

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        """A unit property, or "" while PID 1 is too busy to answer (seen on a loaded 2-core VM)."""
        return self.run("systemctl", "show", "-p", prop, "--value", unit, check=False).stdout.strip()

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "short-precise", "-u", unit, check=False).stdout

    def poweroff(self, timeout_s: float = 30.0) -> int | None:
        if self.unshare is None:
            return None
        if self.unshare.poll() is None and self.pid:
            self.run("systemctl", "poweroff", check=False)
        try:
            return self.unshare.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # Killing PID 1 of a pid namespace takes every process in it along.
            subprocess.run(["kill", "-KILL", str(self.pid)], check=False)
            return self.unshare.wait(10)


def python_is_debian_311() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    out = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return out == str(sys.version_info[:2])
