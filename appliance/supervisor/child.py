"""One supervised service process and the notify socket it reports to.

The supervisor plays systemd's part of the sd_notify protocol: each child gets its own
datagram socket in $NOTIFY_SOCKET and a $WATCHDOG_USEC, and reports READY=1, STATUS=,
WATCHDOG=1, EXTEND_TIMEOUT_USEC= and STOPPING=1 there exactly as it would under systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("appliance.supervisor")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _NotifyProtocol(asyncio.DatagramProtocol):
    def __init__(self, child: Child) -> None:
        self.child = child

    def datagram_received(self, data: bytes, addr: object) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            self.child.on_notify(key, value)


class Child:
    def __init__(self, name: str, config_path: Path, notify_dir: Path, watchdog_s: float) -> None:
        self.name = name
        self.config_path = config_path
        self.notify_path = notify_dir / f"{name}.notify"
        self.watchdog_s = watchdog_s
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.status = ""
        self.started_at = 0.0
        self.last_ping = 0.0
        self.start_deadline = 0.0
        self.restarts = 0
        self._transport: asyncio.DatagramTransport | None = None

    def on_notify(self, key: str, value: str) -> None:
        now = time.monotonic()
        if key == "READY" and value == "1":
            self.ready.set()
            self.last_ping = now
        elif key == "STATUS":
            self.status = value
        elif key == "WATCHDOG" and value == "1":
            self.last_ping = now
        elif key == "EXTEND_TIMEOUT_USEC" and value.isdigit():
            self.start_deadline = max(self.start_deadline, now + int(value) / 1e6)

    async def open_notify_socket(self) -> None:
        self.notify_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.notify_path))
        self.notify_path.chmod(0o600)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _NotifyProtocol(self), sock=sock)
        self._transport = transport

    async def spawn(self, ready_timeout_s: float) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env["WATCHDOG_USEC"] = str(int(self.watchdog_s * 1_000_000))
        self.ready.clear()
        self.status = "starting"
        self.started_at = self.last_ping = time.monotonic()
        self.start_deadline = self.started_at + ready_timeout_s
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "--config", str(self.config_path), "serve", self.name,
            env=env, stdin=asyncio.subprocess.DEVNULL,
            # Own process group: Ctrl-C reaches only the supervisor, which stops children in order.
            process_group=0, preexec_fn=_die_with_parent)
        log.info("started %s (pid %d)", self.name, self.process.pid, extra={"CHILD": self.name})

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def overdue(self, now: float) -> str | None:
        """Why the child should be killed now: a start that took too long or a missed watchdog."""
        if not self.running:
            return None
        if not self.ready.is_set():
            return "did not report READY=1 in time" if now > self.start_deadline else None
        silent = now - self.last_ping
        return f"watchdog: no ping for {silent:.1f} s" if silent > self.watchdog_s else None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    async def terminate(self, grace_s: float) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit status."""
        if self.process is None:
            return None
        self.kill(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            log.error("%s ignored SIGTERM for %.0f s; killing it", self.name, grace_s)
            self.kill()
            return await self.process.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.notify_path.unlink(missing_ok=True)
