"""What box the engine runs on: CPU, memory, cgroup limit, NVIDIA GPUs, Jetson.

Everything is read from /proc, /sys and /etc under ``root`` (so tests can point it at a
prepared tree) and from ``nvidia-smi`` when it is installed. Nothing here decides anything;
the auto-tuner turns a probe into a plan.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INTERESTING_FLAGS = ("avx", "avx2", "avx512f", "avx512_vnni", "amx_int8", "fma", "f16c", "asimd", "neon", "sve",
                     "dotprod")
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    unified: bool = False  # Jetson: the GPU shares system RAM


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    cores: int
    cpu_flags: tuple[str, ...]
    mem_total_bytes: int
    mem_available_bytes: int
    cgroup_limit_bytes: int | None
    jetson_model: str | None = None
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def usable_ram_bytes(self) -> int:
        """What this process may still allocate: MemAvailable, capped by the cgroup limit."""
        if self.cgroup_limit_bytes is None:
            return self.mem_available_bytes
        return min(self.mem_available_bytes, self.cgroup_limit_bytes)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usable_ram_bytes"] = self.usable_ram_bytes
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        """The inverse of `as_dict`, so a probe saved on one box can be planned for on another."""
        fields = {k: v for k, v in data.items() if k != "usable_ram_bytes"}
        fields["gpus"] = tuple(Gpu(**g) for g in fields.get("gpus", ()))
        fields["cpu_flags"] = tuple(fields.get("cpu_flags", ()))
        fields["notes"] = tuple(fields.get("notes", ()))
        return cls(**fields)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _cpu(root: Path) -> tuple[str, int, tuple[str, ...]]:
    model, processors, flags = "unknown", 0, set[str]()
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            processors += 1
        elif key in ("model name", "hardware", "cpu model") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, max(processors, 1), tuple(f for f in INTERESTING_FLAGS if f in flags)


def _meminfo(root: Path) -> tuple[int, int]:
    values: dict[str, int] = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024  # kB
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", values.get("MemFree", total))


def _cgroup_limit(root: Path) -> int | None:
    """The memory limit of this process's cgroup (v2, else v1), or None when unlimited."""
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path:
            limit = _read(root / "sys/fs/cgroup" / path.strip().lstrip("/") / "memory.max")
            if limit is not None:
                return None if limit.strip() == "max" else int(limit)
    limit = _read(root / "sys/fs/cgroup/memory.max") or _read(root / "sys/fs/cgroup/memory/memory.limit_in_bytes")
    if limit is None or limit.strip() == "max":
        return None
    value = int(limit)
    return None if value >= UNLIMITED else value


def _jetson(root: Path) -> str | None:
    model = (_read(root / "proc/device-tree/model") or "").strip("\x00\n ")
    if "jetson" in model.lower():
        return model
    if (root / "etc/nv_tegra_release").exists():
        return model or "NVIDIA Jetson (L4T)"
    return None


def _nvidia_smi(binary: str | None) -> tuple[tuple[Gpu, ...], str | None]:
    if binary is None:
        return (), None
    try:
        result = subprocess.run([binary, "--query-gpu=index,name,memory.total,memory.free",
                                 "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return (), f"nvidia-smi failed: {exc}"
    if result.returncode != 0:
        return (), f"nvidia-smi exited {result.returncode}: {result.stderr.strip()[:200]}"
    gpus = []
    for line in result.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        try:
            index, name, total, free = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            return (), f"nvidia-smi printed a line this probe cannot read: {line[:120]!r}"
        gpus.append(Gpu(index=index, name=name, total_bytes=total << 20, free_bytes=free << 20))
    return tuple(gpus), None


def probe(root: Path = Path("/"), nvidia_smi: str | None = None, *, use_nvidia_smi: bool = True) -> Hardware:
    model, processors, flags = _cpu(root)
    total, available = _meminfo(root)
    limit = _cgroup_limit(root)
    jetson = _jetson(root)
    binary = nvidia_smi or (shutil.which("nvidia-smi") if use_nvidia_smi else None)
    gpus, problem = _nvidia_smi(binary)
    notes = [problem] if problem else []
    if jetson is not None:
        # Unified memory: the GPU can use what the system can spare, no more.
        usable = min(available, limit) if limit is not None else available
        gpus = (Gpu(index=0, name=gpus[0].name if gpus else jetson, total_bytes=total, free_bytes=usable,
                    unified=True),)
        notes.append("Jetson: GPU and CPU share system memory; the GPU budget is the system's available memory")
    # On the real box the CPUs this process may run on (cpusets, taskset); in a test tree, cpuinfo's.
    cores = len(os.sched_getaffinity(0)) if root == Path("/") else processors
    return Hardware(cpu_model=model, cores=cores, cpu_flags=flags, mem_total_bytes=total,
                    mem_available_bytes=available, cgroup_limit_bytes=limit, jetson_model=jetson,
                    gpus=gpus, notes=tuple(notes))
