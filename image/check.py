"""`make check-image`: boot var/image/appliance.img in qemu, the way a mini PC would, and check it.

The machine: q35, UEFI (OVMF with its own NVRAM copy), 2 CPUs, 4 GiB, the image as a virtio disk
behind a copy-on-write overlay grown to 8 GiB (so the first boot has a disk larger than the image
to grow the data partition into), user-mode networking with the API's port forwarded to loopback,
the serial console to a file.

Accelerator: KVM where /dev/kvm opens and the firmware runs under it; TCG otherwise. Where KVM
starts but stops with an internal error (nested virtualisation that cannot run OVMF's flash, as on
the 2-core VMs here), the check says so and goes on with TCG. The log names the one that ran.
CHECK_IMAGE_ACCEL=tcg (or kvm) skips the choice; CHECK_IMAGE_UPDATES=0 stops after the first boot
(checks 1-4 and the power-off).

Checks, in order (each waits by polling, with a deadline, never a fixed sleep):
  1. the data partition is grown to fill the disk (its line on the serial console);
  2. the first-boot setup token appears on the serial console;
  3. GET /api/v1/health through the forwarded port says "ready" (all five services);
  4. the appliance's own self-check says healthy (appliance-healthy.service, the boot's verdict);
  5. updates (`updates` below): a tampered bundle refused, a good update over the API with the data
     kept, a power cut while a slot is written, a release whose engine crash-loops rolled back;
  6. an ACPI power-off ends qemu cleanly.
The log (var/image/check-image.log) has the image's size, its build time (from build.log), the
accelerator, and the seconds from power-on to each of these.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "var" / "image"
IMAGE = OUT / "appliance.img"
LOG = OUT / "check-image.log"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GUEST_API_PORT = 8080
DISK_GIB = 8
T = TypeVar("T")
PASSWORD = "check-image admin password"  # noqa: S105 - the throwaway admin of a throwaway disk
READY_DEADLINE_S = float(os.environ.get("CHECK_IMAGE_DEADLINE_S", "1200"))
# Seen under KVM when the host cannot run OVMF's flash under nested virtualisation.
KVM_FAILURE = re.compile(r"KVM internal error|failed to set MSR|kvm_buf_set_msrs|Could not access KVM")
SETUP_TOKEN = re.compile(r"one-time setup token:? ([A-Za-z0-9_-]{16,})")
DATA_GROWN = re.compile(r"appliance data partition(?: grown from \d+ MiB to (\d+) MiB|: (\d+) MiB)")
SELF_CHECK = re.compile(r"self-check: (healthy|not healthy)[^\r\n]*")


def say(line: str) -> None:
    sys.stderr.write(f"check-image: {line}\n")
    with LOG.open("a") as log:
        log.write(line + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


@dataclass
class Machine:
    """One qemu run of the image, on an overlay in `folder`; the serial console goes to serial.log."""

    folder: Path
    accel: str
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def serial(self) -> Path:
        return self.folder / "serial.log"

    def prepare(self, image: Path) -> None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
                        str(self.folder / "disk.qcow2"), f"{DISK_GIB}G"], check=True)
        shutil.copyfile(OVMF_VARS, self.folder / "vars.fd")

    def start(self) -> None:
        accel = ["-accel", "kvm", "-cpu", "host,-arch-capabilities"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=multi", "-cpu", "max"]
        argv = ["qemu-system-x86_64", *accel, "-machine", "q35", "-smp", "2", "-m", "4096",
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={self.folder / 'vars.fd'}",
                "-drive", f"if=virtio,format=qcow2,file={self.folder / 'disk.qcow2'}",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.api_port}-:{GUEST_API_PORT}",
                "-device", "virtio-net-pci,netdev=net0",
                "-chardev", f"file,id=serial0,path={self.serial},append=on", "-serial", "chardev:serial0",
                "-monitor", f"unix:{self.folder / 'monitor'},server,nowait",
                "-display", "none"]
        if not self.serial.exists():
            self.serial.write_bytes(b"")
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdout=(self.folder / "qemu.out").open("wb"), stderr=subprocess.STDOUT)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def qemu_output(self) -> str:
        return (self.folder / "qemu.out").read_text(errors="replace")

    def console(self) -> str:
        return self.serial.read_text(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for(self, what: str, found: Callable[[], T | None], deadline_s: float) -> T:
        while self.elapsed() < deadline_s:
            if (result := found()):
                return result
            if not self.running():
                raise CheckFailed(f"qemu exited while waiting for {what}: {self.qemu_output()[-600:]}")
            time.sleep(1)
        raise CheckFailed(f"{what}: not seen within {deadline_s:.0f} s of power-on")

    def health(self) -> dict[str, object] | None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the box's self-signed certificate
        for scheme in ("https", "http"):
            try:
                url = f"{scheme}://127.0.0.1:{self.api_port}/api/v1/health"
                with urllib.request.urlopen(  # noqa: S310 - a fixed http(s) URL on loopback
                        url, timeout=3, context=context if scheme == "https" else None) as reply:
                    return dict(json.load(reply))
            except (OSError, ValueError):
                continue
        return None

    def power_off(self, timeout_s: float = 120) -> bool:
        """ACPI power button, as a person would press it; True when qemu ended by itself."""
        try:
            with socket.socket(socket.AF_UNIX) as monitor:
                monitor.connect(str(self.folder / "monitor"))
                monitor.sendall(b"system_powerdown\n")
                time.sleep(0.5)
        except OSError:
            pass
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class CheckFailed(Exception):
    pass


def first_boot(machine: Machine) -> dict[str, float]:
    """The checks of the module docstring; the seconds from power-on to each."""
    times: dict[str, float] = {}
    grown = machine.wait_for("the data partition's line", lambda: DATA_GROWN.search(machine.console()), 600)
    times["data partition"] = machine.elapsed()
    size = next(g for g in grown.groups() if g)
    say(f"  {times['data partition']:6.1f} s  data partition: {grown.group(0)}")
    if int(size) < (DISK_GIB - 5) * 1024:
        raise CheckFailed(f"the data partition is {size} MiB on a {DISK_GIB} GiB disk: it did not grow")
    token = machine.wait_for("the setup token on the serial console", lambda: SETUP_TOKEN.search(machine.console()),
                             READY_DEADLINE_S)
    times["setup token"] = machine.elapsed()
    say(f"  {times['setup token']:6.1f} s  setup token on the serial console: "
        f"{token.group(1)[:4]}...")

    def ready() -> dict[str, object] | None:
        health = machine.health()
        return health if health is not None and health.get("status") == "ready" else None

    health = machine.wait_for("GET /api/v1/health to say ready", ready, READY_DEADLINE_S)
    times["ready"] = machine.elapsed()
    say(f"  {times['ready']:6.1f} s  GET /api/v1/health (forwarded port): {json.dumps(health)}")
    verdict = machine.wait_for("the self-check's verdict", lambda: SELF_CHECK.search(machine.console()),
                               READY_DEADLINE_S)
    times["self-check"] = machine.elapsed()
    say(f"  {times['self-check']:6.1f} s  {verdict.group(0).strip()}")
    if verdict.group(1) != "healthy":
        raise CheckFailed(verdict.group(0))
    return times


# --- updates (issue: A/B with rollback) --------------------------------------------------------------

def variant_root(base: Path, out: Path, version: str, *, broken_engine: bool = False) -> Path:
    """A copy of the image's root filesystem as the next version would ship it: its release file and the
    appliance package's version say `version`; with `broken_engine`, the engine's unit runs /bin/false
    (a release whose engine crash-loops). Edited with debugfs, offline: no mount, no loop device."""
    subprocess.run(["cp", "--sparse=always", str(base), str(out)], check=True)
    site = subprocess.run(["debugfs", "-R", "ls -p /opt/appliance/lib", str(out)], capture_output=True,
                          text=True, check=True).stdout
    python = re.search(r"/(python3\.\d+)/", site)
    assert python, site
    package = f"/opt/appliance/lib/{python[1]}/site-packages/appliance/__init__.py"
    with tempfile.TemporaryDirectory() as folder:
        init = Path(folder) / "init.py"
        current = subprocess.run(["debugfs", "-R", f"cat {package}", str(out)], capture_output=True, text=True,
                                 check=True).stdout
        init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', current))
        release = Path(folder) / "release"
        release.write_text(f"VERSION={version}\nBUILD=check-image\nARCH=x86_64\n")
        script = [f"rm {package}", f"write {init} {package}", "rm /etc/appliance-release",
                  f"write {release} /etc/appliance-release"]
        if broken_engine:
            dropin = Path(folder) / "broken.conf"
            dropin.write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
            script += ["mkdir /etc/systemd/system/appliance-engine.service.d",
                       f"write {dropin} /etc/systemd/system/appliance-engine.service.d/broken.conf"]
        commands = Path(folder) / "commands"
        commands.write_text("\n".join(script) + "\n")
        result = subprocess.run(["debugfs", "-w", "-f", str(commands), str(out)], capture_output=True, text=True)
        if result.returncode != 0 or "rror" in result.stderr:
            raise CheckFailed(f"debugfs could not edit the root copy: {result.stderr[-400:]}")
    return out


def bundle_of(root: Path, version: str, out: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "image" / "bundle.py"), "--version", version, "--rootfs", str(root),
                    "--out", str(out)], check=True)
    return out


class Api:
    """The box's REST API through the forwarded port, as an admin (made with the setup token)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.token = ""
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE

    def call(self, method: str, path: str, body: bytes | dict[str, object] | None = None,
             timeout: float = 60) -> tuple[int, Any]:
        status, reply = self._call(method, path, body, timeout)
        if status == 401 and self.token:  # the access token lives 15 minutes; the check runs longer
            login: dict[str, object] = {"username": "admin", "password": PASSWORD}
            self.token = ""
            code, tokens = self._call("POST", "/api/v1/auth/login", login, timeout)
            if code != 200:
                raise CheckFailed(f"POST /api/v1/auth/login: {code} {tokens}")
            self.token = str(tokens["access_token"])
            status, reply = self._call(method, path, body, timeout)
        return status, reply

    def _call(self, method: str, path: str, body: bytes | dict[str, object] | None,
              timeout: float) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/octet-stream" if isinstance(body, bytes) else "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"https://127.0.0.1:{self.machine.api_port}{path}", data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as reply:  # noqa: S310
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def sign_in(self, setup_token: str) -> None:
        status, reply = self.call("POST", "/api/v1/auth/setup", {"setup_token": setup_token, "username": "admin",
                                                                 "password": PASSWORD})
        if status != 200:
            raise CheckFailed(f"POST /api/v1/auth/setup: {status} {reply}")
        self.token = str(reply["access_token"])

    def upload(self, bundle: Path) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/system/update", bundle.read_bytes(), timeout=600)

    def update_status(self) -> Any:
        status, reply = self.call("GET", "/api/v1/system/update")
        if status != 200:
            raise CheckFailed(f"GET /api/v1/system/update: {status} {reply}")
        return reply


def wait_for_boot(machine: Machine, mark: int, slot: str, deadline_s: float) -> str:
    """Until a boot after console offset `mark` ends with the self-check's verdict "healthy" on `slot`;
    the console from `mark` on."""
    healthy = re.compile(rf"self-check: healthy \(slot {slot}\b")
    machine.wait_for(f"a healthy boot on slot {slot}", lambda: healthy.search(machine.console()[mark:]), deadline_s)
    return machine.console()[mark:]


def updates(machine: Machine, api: Api, folder: Path) -> dict[str, float]:
    """A tampered bundle refused; a good update over the API, back on the other slot with the data; the
    power cut in the middle of writing a bundle; a release whose engine crash-loops, rolled back."""
    times: dict[str, float] = {}
    status, fact = api.call("POST", "/api/v1/memory", {"text": "The boiler room key hangs in the red cabinet.",
                                                       "kind": "fact"})
    if status != 201:
        raise CheckFailed(f"POST /api/v1/memory: {status} {fact}")
    base = OUT / "rootfs.ext4"
    good = bundle_of(variant_root(base, folder / "root-good.ext4", "0.1.1"), "0.1.1", folder / "good.bundle")
    (folder / "root-good.ext4").unlink()

    tampered = folder / "tampered.bundle"
    shutil.copyfile(good, tampered)
    with tarfile.open(tampered) as tar:
        offset = tar.getmember("rootfs.ext4.zst").offset_data + 4096
    with tampered.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))
    status, reply = api.upload(tampered)
    if status != 400:
        raise CheckFailed(f"a tampered bundle was not refused: {status} {reply}")
    say(f"  tampered bundle refused: {status} {reply['error']['message']}")
    tampered.unlink()

    started, mark = time.monotonic(), len(machine.console())
    status, reply = api.upload(good)
    if status != 202:
        raise CheckFailed(f"POST /api/v1/system/update (good bundle): {status} {reply}")
    wait_for_boot(machine, mark, "b", 1800)
    machine.wait_for("GET /api/v1/health to say ready on slot b", lambda: (machine.health() or {}).get("status")
                     == "ready", machine.elapsed() + 600)
    times["update"] = time.monotonic() - started
    state = api.update_status()
    last = state.get("last_boot") or {}
    if state.get("running_slot") != "b" or last.get("version") != "0.1.1":
        raise CheckFailed(f"after the update: {state}")
    status, found = api.call("GET", "/api/v1/memory/search?q=boiler+room+key&k=3")
    hits = found.get("hits") or []
    if status != 200 or not hits or "red cabinet" not in json.dumps(hits[0]):
        raise CheckFailed(f"the fact remembered before the update is not found after it: {status} {found}")
    say(f"  update 0.1.0 -> 0.1.1 over the API: slot b healthy and the API ready {times['update']:.0f} s after the "
        "upload began; the memory remembered before it is found")

    broken = bundle_of(variant_root(base, folder / "root-broken.ext4", "0.1.2", broken_engine=True), "0.1.2",
                       folder / "broken.bundle")
    (folder / "root-broken.ext4").unlink()
    status, reply = api.upload(broken)
    if status != 202:
        raise CheckFailed(f"POST /api/v1/system/update (broken bundle): {status} {reply}")

    def writing() -> bool:
        state = api.update_status()
        return state.get("state") == "installing" and float(state.get("progress") or 0) >= 0.3

    machine.wait_for("the install to be a third written", writing, machine.elapsed() + 900)
    machine.kill()
    say("  power cut (qemu killed) with slot a a third written")
    mark = len(machine.console())
    machine.start()
    wait_for_boot(machine, mark, "b", 1200)
    state = api.update_status()
    say(f"  power back: booted slot {state.get('running_slot')} again; the install is reported "
        f"{state.get('state')!r}: {state.get('detail')}")
    if state.get("running_slot") != "b" or state.get("state") != "failed" or "interrupted" not in state.get("detail"):
        raise CheckFailed(f"after the power cut: {state}")

    started, mark = time.monotonic(), len(machine.console())
    status, reply = api.upload(broken)
    if status != 202:
        raise CheckFailed(f"POST /api/v1/system/update (broken bundle, again): {status} {reply}")
    console = wait_for_boot(machine, mark, "b", 3600)
    times["rollback"] = time.monotonic() - started
    failures = re.findall(r"self-check: not healthy[^\r\n]*", console)
    boots = api.update_status().get("boots") or []
    bad = [b for b in boots if b.get("result") == "bad" and b.get("version") == "0.1.2"]
    if len(bad) < 3 or api.update_status().get("running_slot") != "b":
        raise CheckFailed(f"no rollback after three failed boots of 0.1.2: {failures} {boots}")
    say(f"  a release whose engine crash-loops (0.1.2, slot a): {len(bad)} failed boots, then slot b again by "
        f"itself, {times['rollback']:.0f} s after the upload; recorded reason: {bad[-1].get('reason')}")
    return times



def boot(accel: str, folder: Path) -> tuple[str, dict[str, float]]:
    """Boot once with `accel`; with KVM that cannot run the firmware, say so and use TCG."""
    machine = Machine(folder / accel, accel)
    machine.folder.mkdir()
    machine.prepare(IMAGE)
    machine.start()
    try:
        if accel == "kvm":
            # KVM's failure shows within seconds: watch for it until the firmware writes to the console.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and machine.running() and not machine.console():
                if KVM_FAILURE.search(machine.qemu_output()):
                    break
                time.sleep(0.5)
            if not machine.running() or KVM_FAILURE.search(machine.qemu_output()):
                reason = (KVM_FAILURE.search(machine.qemu_output()) or re.search(".+", machine.qemu_output()))
                say(f"KVM did not run the firmware ({reason.group(0) if reason else 'qemu exited'}); using TCG")
                machine.kill()
                return boot("tcg", folder)
        say(f"booting {IMAGE.name} under {accel.upper()} (q35, OVMF, 2 CPUs, 4 GiB, {DISK_GIB} GiB disk)")
        times = first_boot(machine)
        if os.environ.get("CHECK_IMAGE_UPDATES", "1") != "0":
            api = Api(machine)
            token = SETUP_TOKEN.search(machine.console())
            assert token is not None
            api.sign_in(token.group(1))
            times.update(updates(machine, api, folder))
        clean = machine.power_off()
        say(f"  power-off: {'clean (ACPI)' if clean else 'did not end within 120 s; killed'}")
        if not clean:
            raise CheckFailed("the box did not power off on the ACPI button")
        return accel, times
    finally:
        machine.kill()
        if machine.serial.exists():
            shutil.copyfile(machine.serial, OUT / f"check-image-serial-{accel}.log")
            say(f"the serial console is in {OUT / f'check-image-serial-{accel}.log'}")


def main() -> int:
    if not IMAGE.exists():
        sys.stderr.write("check-image: no var/image/appliance.img; run `make image` first\n")
        return 2
    LOG.write_text("")
    build = (OUT / "build.log").read_text() if (OUT / "build.log").exists() else ""
    built = re.findall(r"image: built .*", build)
    say(f"image: {IMAGE.stat().st_size / 2**30:.2f} GiB disk, {IMAGE.stat().st_blocks * 512 / 2**30:.2f} GiB "
        f"allocated; {built[-1] if built else 'build log missing'}")
    with tempfile.TemporaryDirectory(prefix="check-image-", dir="/var/tmp") as folder:
        try:
            accel = os.environ.get("CHECK_IMAGE_ACCEL", "auto")
            if accel not in ("auto", "kvm", "tcg"):
                sys.stderr.write(f"check-image: CHECK_IMAGE_ACCEL={accel[:20]!r}: give auto, kvm or tcg\n")
                return 2
            ran, times = boot(("kvm" if kvm_usable() else "tcg") if accel == "auto" else accel, Path(folder))
        except CheckFailed as exc:
            say(f"FAILED: {exc}")
            return 1
    say(f"passed under {ran.upper()}: power-on to ready {times['ready']:.1f} s, to the self-check's verdict "
        f"{times['self-check']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
