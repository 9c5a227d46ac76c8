"""The sandbox helper: the agent's privileged half, for boxes where the agent itself cannot start bwrap.

Under the shipped units the agent is the unprivileged `appliance` user in a unit that may not
create namespaces or mount, so bubblewrap cannot run there. systemd starts one helper per
connection on appliance-sandbox.socket (Accept=yes; the socket is root's and group appliance's,
0660): root, in its own narrowly hardened unit that keeps only what bwrap and setpriv need. The
agent writes one request line and reads one reply line; the helper runs the request with
sandbox.run the setpriv way (uid 65534, no capabilities, no_new_privs), in a workspace of its
own that it removes afterwards. When the agent goes away — it cancelled the run, or it died — the
connection closes and the helper kills the sandbox at once, so a sandbox never outlives its agent.

Wire (JSON lines): request ``{"argv": [...], "profile": {...}}``; reply an Outcome, or
``{"error": "..."}`` for a request it refused. What a request may ask for is what the agent may
already do: run a program as uid 65534 with read-only or writable binds, which uid 65534's own
file permissions still govern.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from appliance.agent import sandbox
from appliance.config import SandboxLimits

MAX_REQUEST_BYTES = 1 << 20
OUTCOME = TypeAdapter(sandbox.Outcome)
log = logging.getLogger("appliance.sandbox-helper")


class HelperRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, max_length=256)
    profile: sandbox.Profile

    @model_validator(mode="after")
    def _absolute_paths(self) -> HelperRequest:
        profile = self.profile
        for path in [*profile.readable, *profile.writable, *([profile.workdir] if profile.workdir else [])]:
            if not path.is_absolute() or "\x00" in str(path):
                raise ValueError(f"profile: {str(path)[:100]!r} is not an absolute path")
        if any("\x00" in part for part in self.argv):
            raise ValueError("argv: NUL in an argument")
        return self


async def run_via_helper(path: Path, argv: list[str], profile: sandbox.Profile) -> sandbox.Outcome:
    """The agent's side: one run through the helper at ``path``; cancelled, it closes the connection,
    which makes the helper kill the sandbox."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=2 * MAX_REQUEST_BYTES)
    try:
        writer.write(HelperRequest(argv=argv, profile=profile).model_dump_json().encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise RuntimeError(f"the sandbox helper at {path} closed the connection without an answer")
    if line.startswith(b'{"error"'):
        raise RuntimeError(f"the sandbox helper refused the run: {line.decode(errors='replace').strip()}")
    return OUTCOME.validate_json(line)


async def serve_connection(connection: socket.socket, workspaces: Path, *, private_network: bool = False) -> None:
    """The helper's side: one request on ``connection`` (systemd's accepted socket). ``private_network``:
    the helper's unit already gives it a network namespace with only loopback (PrivateNetwork=yes),
    which its sandboxes share instead of getting their own."""
    reader, writer = await asyncio.open_connection(sock=connection, limit=MAX_REQUEST_BYTES + 1)
    try:
        try:
            request = HelperRequest.model_validate_json(await reader.readuntil(b"\n"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValidationError) as exc:
            reply = b'{"error": ' + _quoted(f"bad request: {str(exc).splitlines()[0]}") + b"}"
        else:
            try:
                outcome = await _run_while_connected(request, reader, workspaces / uuid.uuid4().hex,
                                                     new_net=not private_network)
                if outcome is None:
                    return  # the agent went away; its sandbox is dead
                reply = OUTCOME.dump_json(outcome)
            except Exception as exc:  # bwrap or prlimit missing, a workspace it could not make
                log.exception("cannot run %s", request.argv[0])
                reply = b'{"error": ' + _quoted(f"cannot run: {exc}") + b"}"
        writer.write(reply + b"\n")
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run_while_connected(request: HelperRequest, reader: asyncio.StreamReader, workspace: Path, *,
                               new_net: bool) -> sandbox.Outcome | None:
    """The outcome, with the workspace removed by then; None (the sandbox killed) if the agent left first."""
    try:
        await asyncio.to_thread(sandbox.make_workspace, workspace, root=True)
        running = asyncio.create_task(sandbox.run(request.argv, request.profile, workspace, root=True,
                                                  new_net=new_net))
        left = asyncio.create_task(reader.read())  # b"" once the agent closes its end
        await asyncio.wait({running, left}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            log.warning("the agent went away: killing the sandbox of %s", request.argv[0])
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            return None
        left.cancel()
        return running.result()
    finally:
        await remove_workspace(workspace, new_net)


async def remove_workspace(workspace: Path, new_net: bool = True) -> None:
    """Remove what uid 65534 left: it empties the folder itself, in a sandbox (its own folders may be
    locked even to root without CAP_DAC_OVERRIDE, which this helper does not have); then the folder goes."""
    if not await asyncio.to_thread(workspace.exists):
        return
    empty = ["/bin/sh", "-c", "chmod -R u+rwx /work 2>/dev/null; find /work -mindepth 1 -delete"]
    limits = SandboxLimits(wall_s=60, cpu_s=30)
    outcome = await sandbox.run(empty, sandbox.Profile(limits=limits), workspace, root=True, new_net=new_net)
    try:
        await asyncio.to_thread(workspace.rmdir)
    except OSError as exc:
        log.error("cannot remove the workspace %s (%s; emptying it: %s)", workspace, exc, outcome.summary())


def _quoted(text: str) -> bytes:
    return TypeAdapter(str).dump_json(text[:500])


def workspaces_folder(state_dir: Path) -> Path:
    """systemd's StateDirectory for the helper unit, else one under the appliance's state."""
    folder = Path(os.environ.get("STATE_DIRECTORY", state_dir / "sandbox")).resolve()
    folder.mkdir(mode=0o711, parents=True, exist_ok=True)
    return folder
