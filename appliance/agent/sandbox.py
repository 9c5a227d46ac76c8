"""Run one action in a bubblewrap sandbox, with resource limits, and say how it ended.

What the action sees: /usr read-only (and the usual /bin, /lib symlinks into it), a handful of
/etc files a program needs to start (no /etc/shadow, no appliance keys or state: they are not
in its world at all), a private /proc, a minimal /dev, a private /tmp, the scripts folder
read-only as its working directory, and one writable workspace per run at /work. It runs in new
user, pid, ipc, uts, cgroup and network namespaces (the network only when the action declares
it), with every capability dropped, in a new session, and dies with the agent (bwrap's
--die-with-parent; killing bwrap, pid 1 of the action's pid namespace, kills everything in it).
Inside, the action is uid 65534 in its own user namespace, with no capability in the box's.
(Under systemd the agent is the unprivileged `appliance` user. Run as root in development, the
namespace's one mapped id is root's: what keeps it out of root's files is that they are not in
its world, and that everything bound in is read-only but /work and /tmp.)

Limits are rlimits set by prlimit(1) before bwrap starts: CPU seconds (SIGXCPU, then SIGKILL),
address space, processes (the fork-bomb guard: counted per user), file size and open files.
The wall-time limit is ours: at the deadline the whole sandbox is killed. stdout and stderr are
captured up to output_bytes each; the rest is read and dropped, so a chatty action cannot block
or fill memory. The result names the limit that fired when it can be known from outside: wall
time, CPU time, output. Without a cgroup (this box's hierarchy is not delegated to us), a failed
allocation or fork is seen by the action itself, as ENOMEM or EAGAIN, not reported as a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from appliance.config import SandboxLimits

NOBODY = 65534
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
             "localtime", "timezone", "mime.types")
ETC_NETWORK_FILES = ("resolv.conf", "hosts", "ssl", "ca-certificates", "gai.conf")
PATH = "/usr/local/bin:/usr/bin:/bin"
Limit = Literal["wall_time", "cpu_time", "output"]


@dataclass
class Profile:
    """What one action may touch (from its declaration in agent.actions)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    network: bool = False
    env: dict[str, str] = field(default_factory=dict)
    readable: list[Path] = field(default_factory=list)
    writable: list[Path] = field(default_factory=list)
    workdir: Path | None = None  # bound read-only at /scripts and the working directory


@dataclass
class Outcome:
    exit_code: int | None
    signal: str | None
    limit: Limit | None
    stdout: str
    stderr: str
    truncated: bool
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    def summary(self) -> str:
        how = (f"exit {self.exit_code}" if self.exit_code is not None else f"killed by {self.signal}")
        return how + (f"; the {self.limit.replace('_', ' ')} limit fired" if self.limit else "")


def bwrap_argv(argv: list[str], profile: Profile, workspace: Path) -> list[str]:
    """The full command line: prlimit, then bwrap, then the action."""
    limits = profile.limits
    mib = 1 << 20
    command = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mib * mib}",
               f"--nproc={limits.processes}", f"--fsize={limits.file_mib * mib}", f"--nofile={limits.open_files}",
               "--"]
    command += ["bwrap", "--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY),
                *(["--share-net"] if profile.network else []), "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--clearenv", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        if Path(f"/usr/{name}").exists():
            command += ["--symlink", f"usr/{name}", f"/{name}"]
    for name in ETC_FILES + (ETC_NETWORK_FILES if profile.network else ()):
        if Path("/etc", name).exists():
            command += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(workspace), "/work"]
    for path in profile.readable:
        command += ["--ro-bind", str(path), str(path)]
    for path in profile.writable:
        command += ["--bind", str(path), str(path)]
    if profile.workdir is not None:
        command += ["--ro-bind", str(profile.workdir), "/scripts", "--chdir", "/scripts"]
    else:
        command += ["--chdir", "/work"]
    command += ["--remount-ro", "/"]  # the sandbox's own root too: only /work, /tmp and declared paths take writes
    env = {"PATH": PATH, "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **profile.env}
    for key, value in env.items():
        command += ["--setenv", key, value]
    return [*command, "--", *_resolve(argv)]


def _resolve(argv: list[str]) -> list[str]:
    """`python` means python3 where only python3 exists (Debian): the reference design writes `python x.py`."""
    if argv and argv[0] == "python" and not Path("/usr/bin/python").exists():
        return ["python3", *argv[1:]]
    return argv


def make_workspace(workspace: Path) -> None:
    """The run's writable folder (blocking: call it in a thread)."""
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)


async def run(argv: list[str], profile: Profile, workspace: Path) -> Outcome:
    """Run ``argv`` (never through a shell) in the sandbox, in ``workspace`` (see make_workspace);
    cancelled, it kills the sandbox first."""
    for tool in ("prlimit", "bwrap"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian packages: bubblewrap, util-linux)")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *bwrap_argv(argv, profile, workspace), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stderr is not None
    cap = profile.limits.output_bytes
    readers = [asyncio.create_task(_capped(stream, cap)) for stream in (process.stdout, process.stderr)]
    limit: Limit | None = None
    try:
        await asyncio.wait_for(process.wait(), profile.limits.wall_s)
    except TimeoutError:
        limit = "wall_time"
        _kill(process)
        await process.wait()
    except BaseException:
        _kill(process)
        await asyncio.shield(process.wait())
        for reader in readers:
            reader.cancel()
        raise
    (out, out_cut), (err, err_cut) = [await reader for reader in readers]
    code = process.returncode
    assert code is not None
    signo = -code if code < 0 else (code - 128 if code > 128 else None)  # bwrap reports a signal as 128+n
    name = _signal_name(signo) if signo else None
    if limit is None and name == "SIGXCPU":
        limit = "cpu_time"
    if limit is None and (out_cut or err_cut):
        limit = "output"
    return Outcome(exit_code=None if name else code, signal=name, limit=limit,
                   stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                   truncated=out_cut or err_cut, wall_s=time.monotonic() - started)


def _signal_name(signo: int) -> str | None:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return None


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL bwrap's whole process group; bwrap's death takes the pid namespace with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    kept, cut = bytearray(), False
    while chunk := await stream.read(65_536):
        room = cap - len(kept)
        kept += chunk[:max(room, 0)]
        cut = cut or len(chunk) > room
    return bytes(kept), cut
