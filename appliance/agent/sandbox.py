"""Run one action in a bubblewrap sandbox, with resource limits, and say how it ended.

What the action sees: /usr read-only (and the usual /bin, /lib symlinks into it), a handful of
/etc files a program needs to start (no /etc/shadow, no appliance keys or state: they are not
in its world at all), a private /proc, a minimal /dev, a private /tmp, the scripts folder
read-only as its working directory, and one writable workspace per run at /work. It runs in new
pid, ipc and network namespaces (the network only when the action declares it; with a user
namespace also uts and cgroup ones), in a new session, with no capability, and dies with the
agent (bwrap's --die-with-parent; killing bwrap, pid 1 of the action's pid namespace, kills
everything in it). It is uid 65534 in one of two ways, picked by who runs bwrap:

- not root (an agent run by an ordinary user): bwrap makes a user namespace in which the
  action is 65534 with every capability dropped;
- root (the sandbox helper under the shipped units, helper.py; a development shell, CI, and any
  chroot, where the kernel refuses user namespaces):
  no user namespace; bwrap keeps only CAP_SETUID/CAP_SETGID for its child, which is setpriv(1)
  becoming the real uid/gid 65534 with empty capability sets, no groups and no_new_privs
  before it execs the action. Here the action is the box's `nobody`, so the process limit
  (counted per real user) applies too, and the workspace is open to it (mode 0777).

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


def as_root() -> bool:
    """Whether the sandbox drops from real root with setpriv instead of using a user namespace."""
    return os.geteuid() == 0


def bwrap_argv(argv: list[str], profile: Profile, workspace: Path, *, root: bool, new_net: bool = True) -> list[str]:
    """The full command line: prlimit, then bwrap, then (as root) setpriv, then the action.
    ``new_net=False``: the caller is already in a network namespace of its own (the helper's unit,
    PrivateNetwork=yes), so bwrap makes none (as root it could not bring up its loopback without
    CAP_NET_ADMIN)."""
    limits = profile.limits
    mib = 1 << 20
    command = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mib * mib}",
               f"--nproc={limits.processes}", f"--fsize={limits.file_mib * mib}", f"--nofile={limits.open_files}",
               "--"]
    if root:  # no uts or cgroup namespace: without capabilities it cannot rename the host anyway, and
        # the helper's unit (systemd/appliance-sandbox@.service) need not allow them
        namespaces = ["--unshare-ipc", "--unshare-pid", *([] if profile.network or not new_net else ["--unshare-net"]),
                      "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        namespaces = ["--unshare-all", *(["--share-net"] if profile.network else []), "--uid", str(NOBODY),
                      "--gid", str(NOBODY), "--cap-drop", "ALL"]
    command += ["bwrap", *namespaces, "--die-with-parent", "--new-session", "--clearenv",
                "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        if Path(f"/usr/{name}").exists():
            command += ["--symlink", f"usr/{name}", f"/{name}"]
    command += ["--perms", "0755", "--dir", "/etc"]  # else bwrap makes it 0700, closed to uid 65534
    for name in ETC_FILES + (ETC_NETWORK_FILES if profile.network else ()):
        if Path("/etc", name).exists():
            command += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    command += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
                "--bind", str(workspace), "/work"]
    made: set[Path] = set()
    for how, paths in (("--ro-bind", profile.readable), ("--bind", profile.writable)):
        for path in paths:
            command += [*_parents(path, made), how, str(path), str(path)]
    if profile.workdir is not None:
        command += ["--ro-bind", str(profile.workdir), "/scripts", "--chdir", "/scripts"]
    else:
        command += ["--chdir", "/work"]
    command += ["--remount-ro", "/"]  # the sandbox's own root too: only /work, /tmp and declared paths take writes
    env = {"PATH": PATH, "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **profile.env}
    for key, value in env.items():
        command += ["--setenv", key, value]
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"] if root else []
    return [*command, "--", *drop, *_resolve(argv)]


def _parents(path: Path, made: set[Path]) -> list[str]:
    """Open folders above a bound path (bwrap would make them 0700, closed to uid 65534)."""
    command: list[str] = []
    for parent in reversed(path.parents[:-1]):
        if parent not in made and str(parent) not in ("/usr", "/etc", "/tmp", "/proc", "/dev"):
            made.add(parent)
            command += ["--perms", "0755", "--dir", str(parent)]
    return command


def _resolve(argv: list[str]) -> list[str]:
    """`python` means python3 where only python3 exists (Debian): the reference design writes `python x.py`."""
    if argv and argv[0] == "python" and not Path("/usr/bin/python").exists():
        return ["python3", *argv[1:]]
    return argv


def make_workspace(workspace: Path, *, root: bool | None = None) -> None:
    """The run's writable folder, owned by whoever the action will be (blocking: call it in a thread)."""
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    if as_root() if root is None else root:
        # Root's and open to all, so uid 65534 may write in it with no chown (the helper has no
        # CAP_CHOWN); what encloses it is closed to others (the state folder, the helper's 0711).
        workspace.chmod(0o777)


async def run(argv: list[str], profile: Profile, workspace: Path, *, root: bool | None = None,
              new_net: bool = True) -> Outcome:
    """Run ``argv`` (never through a shell) in the sandbox, in ``workspace`` (see make_workspace);
    cancelled, it kills the sandbox first. ``root`` picks the way to uid 65534 (default: as_root());
    ``new_net``: see bwrap_argv."""
    root = as_root() if root is None else root
    for tool in ("prlimit", "bwrap", *(["setpriv"] if root else [])):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian packages: bubblewrap, util-linux)")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *bwrap_argv(argv, profile, workspace, root=root, new_net=new_net), stdin=asyncio.subprocess.DEVNULL,
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
