"""The hardware probe on this machine, and on prepared /proc trees for boxes we do not have.

The prepared trees and the stand-in nvidia-smi script are fakes by necessity: this VM has no
GPU, no Jetson and no cgroup limit. The real probe of this machine is checked too.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from appliance.engine.probe import probe

GIB = 1 << 30


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def meminfo(total_gib: float, available_gib: float) -> str:
    kib = GIB // 1024
    return f"MemTotal: {int(total_gib * kib)} kB\nMemFree: 1 kB\nMemAvailable: {int(available_gib * kib)} kB\n"


def fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> str:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_this_machine() -> None:
    box = probe(use_nvidia_smi=False)
    assert box.cores >= 1 and box.mem_total_bytes > box.mem_available_bytes > 0
    assert box.usable_ram_bytes <= box.mem_available_bytes


def test_x86_mini_pc_with_a_cgroup_limit(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "proc/cpuinfo": "".join(f"processor\t: {i}\nmodel name\t: Intel N100\nflags\t: fpu avx avx2 fma f16c\n\n"
                                for i in range(4)),
        "proc/meminfo": meminfo(16, 12),
        "proc/self/cgroup": "0::/system.slice/appliance-engine.service\n",
        "sys/fs/cgroup/system.slice/appliance-engine.service/memory.max": str(6 * GIB),
    })
    box = probe(root, use_nvidia_smi=False)
    assert (box.cpu_model, box.cores, box.cpu_flags) == ("Intel N100", 4, ("avx", "avx2", "fma", "f16c"))
    assert box.cgroup_limit_bytes == 6 * GIB and box.usable_ram_bytes == 6 * GIB
    assert box.gpus == () and box.jetson_model is None


def test_desktop_with_an_nvidia_card(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/cpuinfo": "processor: 0\nmodel name: Ryzen\n", "proc/meminfo": meminfo(32, 28),
                           "sys/fs/cgroup/memory.max": "max\n"})
    smi = fake_nvidia_smi(tmp_path, "0, NVIDIA GeForce RTX 3060, 12288, 11800")
    box = probe(root, smi)
    assert len(box.gpus) == 1
    gpu = box.gpus[0]
    assert (gpu.name, gpu.total_bytes, gpu.free_bytes, gpu.unified) == ("NVIDIA GeForce RTX 3060", 12 * GIB,
                                                                         11800 << 20, False)
    assert box.cgroup_limit_bytes is None


def test_jetson_has_one_unified_gpu(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/cpuinfo": "processor: 0\nFeatures: fp asimd\nprocessor: 1\n",
                           "proc/meminfo": meminfo(7.4, 5.0),
                           "proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\x00",
                           "etc/nv_tegra_release": "# R36 (release)\n"})
    box = probe(root, use_nvidia_smi=False)
    assert box.jetson_model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert box.cpu_flags == ("asimd",) and box.cores == 2
    [gpu] = box.gpus
    assert gpu.unified and gpu.free_bytes == box.mem_available_bytes
    assert any("share system memory" in note for note in box.notes)


def test_broken_nvidia_smi_is_a_note_not_a_crash(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/cpuinfo": "", "proc/meminfo": meminfo(8, 4)})
    failing = probe(root, fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed", code=9))
    assert failing.gpus == () and "exited 9" in failing.notes[0]
    (tmp_path / "nvidia-smi").unlink()
    garbled = probe(root, fake_nvidia_smi(tmp_path, "0, weird"))
    assert garbled.gpus == () and "cannot read" in garbled.notes[0]
    assert probe(tmp_path / "nothing-here", use_nvidia_smi=False).cpu_model == "unknown"


def test_cli_prints_json() -> None:
    result = subprocess.run([sys.executable, "-m", "appliance", "engine", "probe"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cores"] >= 1
