"""make bench-tasks: schedules and the sandbox, each next to its baseline in the same run.

- Fire jitter: the real scheduler in this process against the real store process, 1,000 schedules
  loaded. Lateness = when a fire's task was queued in the store minus when it was due. Two layouts: `spread` (1,000
  interval:30 schedules whose phases are spread over the 30 s, set through their marks) and
  `aligned` (1,000 cron:* * * * * schedules, all due at the same minute boundary: the worst case,
  for the batch of fires due at one moment). Each fire queues a task (concurrency: queue): the
  fires due together go to the store as one transaction (task rows, their first steps, marks).
- Idle CPU: the real agent process (its runner, scheduler, heartbeat against a running store)
  with 1,000 schedules that are not due (a daily cron) and with none, IDLE_S seconds each after
  a settle time; CPU seconds from /proc/<pid>/stat.
- Sandbox overhead: /bin/true run through sandbox.run (prlimit + bwrap + the drop to uid 65534)
  and bare (asyncio subprocess), RUNS times each, alternating; both ways to uid 65534 when the
  kernel allows user namespaces here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from appliance.agent import sandbox
from appliance.agent.scheduler import Scheduler
from appliance.config import load_config
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.tasks import STORE_SCHEDULE_MARK, ScheduleMark
from appliance.schedules.model import Schedule

HERE = Path(__file__).parent
SCHEDULES = 1000
TICKS = os.sysconf("SC_CLK_TCK")


class TimedScheduler(Scheduler):
    """The real scheduler, noting how late each fire's task was in the store."""

    lateness: list[float]

    async def fire(self, due: list[tuple[Schedule, datetime]], *, catching_up: bool = False) -> list[int | None]:
        created = await super().fire(due, catching_up=catching_up)
        queued = time.time()
        if not catching_up:
            self.lateness += [queued - at.timestamp() for _, at in due]
        return created


def write_config(folder: Path, **agent: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "agent": agent, "logging": {"level": "warning"}}))
    return config_file


def serve(config_file: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def store_ready(peers: Peers) -> None:
    for _ in range(600):
        with contextlib.suppress(IpcError):
            if (await peers.store.call(HEALTH, timeout_s=1.0)).state is ServiceState.READY:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("the store never became ready")


async def jitter(config_file: Path, layout: str) -> dict[str, float]:
    peers = Peers(load_config(config_file))
    try:
        await store_ready(peers)
        now = time.time()
        if layout == "spread":
            schedules = [Schedule.model_validate({"name": f"s{i}", "trigger": "interval:30", "action": "true",
                                                  "concurrency": "queue"}) for i in range(SCHEDULES)]
            for i, schedule in enumerate(schedules):  # phases spread over the 30 s, the first due in ~2 s
                last = now - 28 + 30 * i / SCHEDULES
                await peers.store.call(STORE_SCHEDULE_MARK, ScheduleMark(name=schedule.name, last_fire=last))
            seconds = 62.0
        else:
            schedules = [Schedule.model_validate({"name": f"a{i}", "trigger": "cron:* * * * *", "action": "true",
                                                  "concurrency": "queue"}) for i in range(SCHEDULES)]
            seconds = 60 - now % 60 + 15  # past the next minute boundary, with time to drain
        scheduler = TimedScheduler(schedules, peers.store, set, lambda: None, logging.getLogger("bench"))
        scheduler.lateness = []
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.run(), seconds)
        return quantiles(scheduler.lateness)
    finally:
        await peers.close()


def quantiles(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    cut = statistics.quantiles(ms, n=100)
    return {"n": len(ms), "p50": statistics.median(ms), "p95": cut[94], "p99": cut[98], "max": ms[-1]}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def idle_cpu(folder: Path, schedules: int, settle_s: float, idle_s: float) -> float:
    """CPU seconds the agent process used over idle_s, after settle_s."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "schedules.yaml"
    file.write_text(yaml.safe_dump({"tasks": [{"name": f"d{i}", "trigger": f"cron:{i % 60} 3 * * *",
                                               "action": "true"} for i in range(schedules)]}))
    config_file = write_config(folder, schedules_file=str(file))
    store, agent = serve(config_file, "store"), serve(config_file, "agent")
    try:
        time.sleep(settle_s)
        before = cpu_seconds(agent.pid)
        time.sleep(idle_s)
        return cpu_seconds(agent.pid) - before
    finally:
        for process in (agent, store):
            process.terminate()
            process.wait(15)


async def sandbox_overhead(folder: Path, runs: int, root: bool) -> tuple[dict[str, float], dict[str, float]]:
    workspace = folder / "work"
    sandbox.make_workspace(workspace, root=root)
    bare: list[float] = []
    boxed: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec("/bin/true")
        await process.wait()
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        outcome = await sandbox.run(["/bin/true"], sandbox.Profile(), workspace, root=root)
        boxed.append(time.perf_counter() - started)
        assert outcome.ok, outcome
    return quantiles(bare), quantiles(boxed)


def user_namespaces() -> bool:
    probe = subprocess.run(["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"], capture_output=True)
    return probe.returncode == 0


def main(idle_s: float, runs: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    lines: list[str] = []
    try:
        fires = {}
        for layout in ("spread", "aligned"):
            config_file = write_config(folder / layout)
            store = serve(config_file, "store")
            try:
                fires[layout] = asyncio.run(jitter(config_file, layout))
            finally:
                store.terminate()
                store.wait(15)
            print(layout, fires[layout], flush=True)
        idle = {n: idle_cpu(folder / f"idle-{n}", n, 10.0, idle_s) for n in (0, SCHEDULES)}
        print("idle", idle, flush=True)
        modes = [True] + ([False] if user_namespaces() else [])
        boxes = {root: asyncio.run(sandbox_overhead(folder / f"box-{root}", runs, root)) for root in modes}
        print("sandbox", boxes, flush=True)
        lines = table(fires, idle, idle_s, boxes, runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (HERE / "results" / "tasks-vm.md").write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


def table(fires: dict[str, dict[str, float]], idle: dict[int, float], idle_s: float,
          boxes: dict[bool, tuple[dict[str, float], dict[str, float]]], runs: int) -> list[str]:
    lines = [f"# Schedules and the sandbox ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}, {platform.release()}; agent run as uid {os.geteuid()}. "
             "Command: `make bench-tasks` (bench/tasks.py); one run.", "",
             f"## Fire jitter, {SCHEDULES:,} schedules (goal: p99 <= 100 ms)", "",
             "| layout | fires | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    names = {"spread": "interval:30, phases spread", "aligned": "cron:* * * * *, all due at once"}
    for layout, q in fires.items():
        lines.append(f"| {names[layout]} | {q['n']:,.0f} | {q['p50']:.1f} | {q['p95']:.1f} | {q['p99']:.1f} | "
                     f"{q['max']:.1f} |")
    lines += ["", f"## Idle CPU of the agent process over {idle_s:g} s (goal: 1,000 schedules indistinguishable "
              "from none)", "", "| schedules | CPU seconds | CPU % |", "|---:|---:|---:|"]
    for count, used in idle.items():
        lines.append(f"| {count:,} | {used:.2f} | {100 * used / idle_s:.2f} |")
    lines += ["", f"## /bin/true, {runs} runs each, alternating", "",
              "| how | p50 ms | p95 ms | max ms | overhead p50 ms |", "|---|---:|---:|---:|---:|"]
    for root, (bare, boxed) in boxes.items():
        how = "setpriv (agent as root)" if root else "user namespace (agent not root)"
        lines.append(f"| bare (asyncio subprocess) | {bare['p50']:.2f} | {bare['p95']:.2f} | {bare['max']:.2f} | |")
        lines.append(f"| sandbox: prlimit + bwrap, {how} | {boxed['p50']:.2f} | {boxed['p95']:.2f} | "
                     f"{boxed['max']:.2f} | {boxed['p50'] - bare['p50']:.2f} |")
    return [*lines, ""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=200, help="sandbox runs (and bare runs)")
    arguments = parser.parse_args()
    main(arguments.idle_seconds, arguments.runs)
