"""The escape suite: real bubblewrap, real limits; every attempt must be contained and reported as such.

Printed as a table with -s. Run as root (the development shell, CI), the kernel does not apply
RLIMIT_NPROC to root's processes, so the fork bomb is contained by the wall-time limit and the
pid namespace (all of it dies with bwrap), not by the process limit; under the shipped units the
agent is the unprivileged `appliance` user and the process limit applies too.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from appliance.agent import sandbox
from appliance.agent.actions import _fill
from appliance.config import SandboxLimits

pytestmark = pytest.mark.slow
ROWS: list[tuple[str, str]] = []


async def attempt(workspace: Path, argv: list[str], **limits: object) -> sandbox.Outcome:
    sandbox.make_workspace(workspace)
    profile = sandbox.Profile(limits=SandboxLimits.model_validate({"wall_s": 10, **limits}))
    return await sandbox.run(argv, profile, workspace)


def exists(path: Path) -> bool:
    return path.exists()


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


async def test_escapes_are_contained(tmp_path: Path) -> None:
    work = tmp_path / "work"
    secret = tmp_path / "keys" / "memory.key"
    secret.parent.mkdir()
    secret.write_text("top secret")
    secret.chmod(0o600)
    outside = tmp_path / "outside.txt"

    done = await attempt(work, sh(f"echo x > {outside}; echo y > /usr/x; echo z > /etc/passwd; echo ok > /work/in"))
    assert not outside.exists() and (work / "in").read_text() == "ok\n"
    ROWS.append(("write outside the workspace", f"refused: {done.stderr.strip().splitlines()[0]}"))

    done = await attempt(work, sh(f"cat /etc/shadow {secret} {tmp_path}/keys/*; ls /var/lib /root"))
    assert "top secret" not in done.stdout and "root:" not in done.stdout
    ROWS.append(("read /etc/shadow and the key file", "not in its world: " + done.stderr.strip().splitlines()[0]))

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), 2)"
        done = await attempt(work, ["python3", "-c", connect])
        assert done.exit_code != 0 and ("unreachable" in done.stderr or "refused" in done.stderr)
        ROWS.append(("connect to a loopback service", done.stderr.strip().splitlines()[-1]))
    finally:
        listener.close()

    done = await attempt(work, sh("bomb() { bomb | bomb & }; bomb"), wall_s=3, processes=32)
    assert done.limit == "wall_time" or done.exit_code is not None
    ROWS.append(("fork bomb", f"{done.summary()} after {done.wall_s:.1f} s: its pid namespace died with it"))

    done = await attempt(work, ["python3", "-c", "x = bytearray(900 << 20)"], memory_mib=256)
    assert done.exit_code != 0 and "MemoryError" in done.stderr
    ROWS.append(("allocate 900 MiB past a 256 MiB limit", "MemoryError, " + done.summary()))

    done = await attempt(work, ["sleep", "60"], wall_s=1)
    assert done.limit == "wall_time" and done.wall_s < 10
    ROWS.append(("sleep past the timeout", done.summary()))

    done = await attempt(work, ["python3", "-c", "while True: pass"], cpu_s=1)
    assert done.limit == "cpu_time"
    ROWS.append(("spin past the CPU limit", done.summary()))

    done = await attempt(work, sh("su root -c 'id -u' || sudo id -u; id -u"))
    assert done.stdout.strip().splitlines()[-1] == "65534" and "\n0\n" not in f"\n{done.stdout}"
    ROWS.append(("a setuid binary (su)", f"no privilege gained; id -u is {done.stdout.strip().splitlines()[-1]}"))

    hostile = "; rm -rf / $(touch /work/pwned) `id`"
    done = await attempt(work, ["echo", _fill("{text}", {"text": hostile})])
    assert done.stdout == hostile + "\n" and not (work / "pwned").exists()
    ROWS.append(("shell injection in an argument", "passed as one literal argument, no shell"))

    sandbox.make_workspace(work)
    (work / "link").symlink_to(secret)
    (work / "etc").symlink_to("/etc")
    done = await attempt(work, sh("cat /work/link; echo x > /work/etc/evil"))
    assert "top secret" not in done.stdout and not exists(Path("/etc/evil"))
    ROWS.append(("a symlink in the workspace pointing outside", "resolved inside the sandbox: "
                 + done.stderr.strip().splitlines()[0]))

    done = await attempt(work, sh("yes"), output_bytes=1024, wall_s=2)
    assert len(done.stdout) <= 1024 and done.truncated
    ROWS.append(("flood stdout", f"kept 1024 bytes, {done.summary()}"))
    print("\nescape suite:\n" + "\n".join(f"| {what} | {how} |" for what, how in ROWS))
