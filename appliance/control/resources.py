"""The box's resources as the status page shows them: CPU, memory, disk, temperatures.

Read from /proc and /sys on each request (cheap); CPU use is measured over a short interval
with the event loop free meanwhile. GPUs come from the engine's probe (nvidia-smi).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import Field

from appliance.protocol.common import Message

CPU_SAMPLE_S = 0.2


class Temperature(Message):
    sensor: str
    celsius: float


class Resources(Message):
    cores: int
    load: tuple[float, float, float] = Field(description="1, 5 and 15 minute load averages")
    cpu_percent: float = Field(description="all cores busy = 100")
    memory_total_bytes: int
    memory_available_bytes: int
    disk_total_bytes: int = Field(description="the file system of the state directory")
    disk_free_bytes: int
    temperatures: list[Temperature]


def _cpu_times(proc: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in (proc / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _meminfo(proc: Path) -> dict[str, int]:
    values = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values


def temperatures(sys_root: Path = Path("/sys")) -> list[Temperature]:
    found = []
    for zone in sorted((sys_root / "class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
            found.append(Temperature(sensor=f"{zone.name}:{kind}", celsius=int((zone / "temp").read_text()) / 1000))
        except (OSError, ValueError):
            continue
    for hwmon in sorted((sys_root / "class/hwmon").glob("hwmon*")):
        try:
            name = (hwmon / "name").read_text().strip()
        except OSError:
            continue
        for sensor in sorted(hwmon.glob("temp*_input")):
            try:
                found.append(Temperature(sensor=f"{name}:{sensor.name.removesuffix('_input')}",
                                         celsius=int(sensor.read_text()) / 1000))
            except (OSError, ValueError):
                continue
    return found


def _read_now(state_dir: Path, proc: Path, cpu_before: tuple[int, int]) -> Resources:
    busy0, total0 = cpu_before
    busy1, total1 = _cpu_times(proc)
    memory = _meminfo(proc)
    disk = os.statvfs(state_dir if state_dir.exists() else "/")
    load = [float(x) for x in (proc / "loadavg").read_text().split()[:3]]
    return Resources(cores=len(os.sched_getaffinity(0)), load=(load[0], load[1], load[2]),
                     cpu_percent=round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
                     memory_total_bytes=memory["MemTotal"], memory_available_bytes=memory.get("MemAvailable", 0),
                     disk_total_bytes=disk.f_blocks * disk.f_frsize, disk_free_bytes=disk.f_bavail * disk.f_frsize,
                     temperatures=temperatures())


async def sample(state_dir: Path, proc: Path = Path("/proc")) -> Resources:
    before = await asyncio.to_thread(_cpu_times, proc)
    await asyncio.sleep(CPU_SAMPLE_S)
    return await asyncio.to_thread(_read_now, state_dir, proc, before)
