"""Start-up time and idle cost of the five services under `appliance run`.

Starts the appliance on a throwaway config (demo models, free ports, a local mosquitto when
one is installed), reads the supervisor's "all 5 services ready in N s" line, lets it settle,
then samples each process's CPU time and RSS from /proc over a window. Prints a table and
writes it to bench/results/idle-<host>.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SETTLE_S = 10.0
WINDOW_S = 30.0
RUNS = 3
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(workdir: Path, broker_port: int, measure: bool) -> tuple[float, dict[str, tuple[float, float]]]:
    config = workdir / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(workdir / "state"), "runtime_dir": str(workdir / "run")},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
    }))
    cli = [sys.executable, "-m", "appliance", "--config", str(config)]
    subprocess.run([*cli, "model", "demo"], check=True, capture_output=True)
    process = subprocess.Popen([*cli, "run"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    banner = process.stdout.readline()
    ready_s = float(banner.split(" ready in ")[1].split(" s")[0])
    usage: dict[str, tuple[float, float]] = {}
    if measure:
        time.sleep(SETTLE_S)
        children = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        names = ["store", "engine", "mqtt", "agent", "api"]
        pids = dict(zip(names, children, strict=True)) | {"supervisor": process.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(WINDOW_S)
        usage = {name: ((cpu_seconds(pid) - before[name]) / WINDOW_S * 100, rss_mib(pid)) for name, pid in pids.items()}
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    return ready_s, usage


def main() -> None:
    broker = None
    broker_port = free_port()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as tmp:
        if Path(mosquitto).exists():
            conf = Path(tmp) / "mosquitto.conf"
            conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
            broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            results = [one_run(Path(tempfile.mkdtemp(dir=tmp)), broker_port, measure=i == RUNS - 1)
                       for i in range(RUNS)]
        finally:
            if broker:
                broker.terminate()
    ready = sorted(r[0] for r in results)
    usage = results[-1][1]
    lines = [
        f"# Idle cost of the appliance ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; demo models (tiny, random weights).",
        f"Command: `make bench` (bench/idle.py); {RUNS} starts, idle sampled over {WINDOW_S:.0f} s "
        f"after {SETTLE_S:.0f} s settling.",
        "",
        f"Time from `appliance run` to all five READY: {', '.join(f'{r:.2f} s' for r in ready)} (sorted)",
        "",
        "| process | idle CPU % of one core | RSS MiB |",
        "|---|---:|---:|",
        *(f"| {name} | {cpu:.2f} | {rss:.1f} |" for name, (cpu, rss) in usage.items()),
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    out = Path(__file__).parent / "results" / f"idle-{platform.node()}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
