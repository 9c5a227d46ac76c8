"""make bench-api: the control plane at fixed arrival rates, next to a bare aiohttp handler in the same run.

An open-loop generator (bench/openloop.py, a process of its own on loopback) sends requests at
100, 300, 1,000 and 3,000 per second, 10 s each, and times each from when it was due, so a stall
is not hidden by a slower send rate (wrk's closed loop hides it). Targets:

1. GET / on a bare aiohttp app in its own process that answers a fixed small JSON: the
   framework's floor on this machine, at the same rates;
2. GET /api/v1/health on the real api process (store, engine, agent and api running; mqtt is
   left out, so health also reports one service that is down, as a box without a broker does);
3. GET /api/v1/auth/me with a bearer token: an authenticated read (token verified, role checked,
   answered from what the api holds);
4. GET /api/v1/tasks with a bearer token: an authenticated read that asks the store over IPC;
5. GET /api/v1/memory/search?q=... with a bearer token (embedded by the engine's default encoder,
   recalled from a store of 2,000 memories), also at 80 % of the encoder's raw batch rate, which
   is measured first in this process (the encoder called directly, batches of 64, no IPC or HTTP).

Then login throughput (wrk, 4 connections: a closed loop is right for "how many per second"):
POST /api/v1/auth/login at the shipped scrypt cost (15), next to scrypt hashes per second in
this process. The per-address login limit is raised for the run (it exists to stop this very load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from appliance.config import load_config
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.modelfiles.tinymodel import CHAT_SHAPE, write_tiny_llama
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.store import STORE_REMEMBER, MemoryIn

HERE = Path(__file__).parent
PASSWORD = "a long bench password"  # noqa: S105 - a throwaway user of the run
BARE = '''
import sys
from aiohttp import web
async def ok(_):
    return web.json_response({"status": "ready", "services": {"store": "ready"}})
app = web.Application()
app.router.add_get("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''
WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)", re.M)
SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, *, seconds: int, connections: int, header: str | None = None,
        script: Path | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if header:
        command += ["-H", header]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    result = {f"p{q}": float(v) * SCALE[unit] for q, v, unit in WRK_LATENCY.findall(out)}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


async def prepare(config_file: Path, names: list[str]) -> str:
    """Wait for the services, fill the store, make a viewer token and a user; the token."""
    config = load_config(config_file)
    peers = Peers(config)
    try:
        for name in names:
            for _ in range(600):
                with contextlib.suppress(IpcError):
                    health = await peers.client(name).call(HEALTH, timeout_s=1.0)  # type: ignore[arg-type]
                    if health.state in (ServiceState.READY, ServiceState.DEGRADED):  # the agent misses mqtt
                        break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError(f"{name} never became ready")
        for i in range(2000):
            await peers.store.call(STORE_REMEMBER, MemoryIn(text=f"event {i}: door {i % 40} opened at gate {i % 7}"))
        dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("bench"))
        token = await dispatcher.call("tokens.create", {"name": "bench", "role": "viewer"}, Caller.local())
        await dispatcher.call("users.create", {"username": "bench", "role": "operator", "password": PASSWORD},
                              Caller.local())
        await asyncio.sleep(1.5)  # the api follows revocations every second: let it catch up once
        return token.token  # type: ignore[attr-defined,no-any-return]
    finally:
        await peers.close()


def scrypt_rate(seconds: float = 5.0) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        hashlib.scrypt(b"a login password", salt=secrets.token_bytes(16), n=2**15, r=8, p=1, maxmem=80 << 20)
        done += 1
    return done / (time.perf_counter() - started)


RATES = (100, 300, 1000, 3000)
RAW_SHARE = 0.8  # the goal: memory search sustains 80 % of the encoder's raw rate


def openloop(url: str, rate: float, seconds: int, header: str | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.openloop", url, "--rate", str(rate), "--seconds", str(seconds)]
    if header:
        command += ["--header", header]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=HERE.parent).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def raw_encoder_rate(seconds: float = 5.0) -> float:
    """Texts/s of the default encoder called directly in this process, in batches of 64."""
    from appliance.engine.encoders import PackagedEncoder, encoder_threads
    from appliance.engine.metrics import EngineCounters

    encoder = asyncio.run(PackagedEncoder.load("use-multilingual-v3", n_threads=encoder_threads(None),
                                               counters=EngineCounters()))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder._encode([f"door {done + i} gate {i % 7}" for i in range(64)])  # the raw pass, no batching layer
        done += 64
    encoder.close()
    return done / (time.perf_counter() - started)


def main(seconds: int) -> None:
    raw_rate = raw_encoder_rate()
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    chat = write_tiny_llama(folder / "models" / "chat.gguf", CHAT_SHAPE, seed=0)
    api_port = free_port()
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({  # the default embedding encoder; a tiny chat model
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "engine": {"chat_model": str(chat), "n_ctx": 1024},
        "api": {"host": "127.0.0.1", "port": api_port},
        "security": {"login_per_ip_per_minute": 10_000},
        "logging": {"level": "warning"},
    }))
    names = ["store", "engine", "agent", "api"]
    processes = [subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", n],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in names]
    bare_port = free_port()
    processes.append(subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)]))
    api = f"http://127.0.0.1:{api_port}"
    try:
        token = asyncio.run(prepare(config_file, names))
        bearer = f"Authorization: Bearer {token}"
        targets: dict[str, tuple[str, str | None, tuple[float, ...]]] = {
            "bare aiohttp handler (floor)": (f"http://127.0.0.1:{bare_port}/", None, RATES),
            "GET /api/v1/health": (f"{api}/api/v1/health", None, RATES),
            "GET /api/v1/auth/me (token)": (f"{api}/api/v1/auth/me", bearer, RATES),
            "GET /api/v1/tasks (token, store over IPC)": (f"{api}/api/v1/tasks?limit=20", bearer, RATES),
            "GET /api/v1/memory/search (token)": (f"{api}/api/v1/memory/search?q=door%2012%20gate&k=5", bearer,
                                                  (100, 300, 1000, round(raw_rate * RAW_SHARE))),
        }
        rows = [(name, openloop(url, rate, seconds, header))
                for name, (url, header, rates) in targets.items() for rate in rates]
        script = folder / "login.lua"
        body = json.dumps({"username": "bench", "password": PASSWORD})
        script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(body)}\n")
        login = wrk(f"{api}/api/v1/auth/login", seconds=seconds, connections=4, script=script)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
    write_table(rows, raw_rate, login, scrypt_rate(), seconds)


def write_table(rows: list[tuple[str, dict[str, Any]]], raw_rate: float, login: dict[str, float], hashes: float,
                seconds: int) -> None:
    floor = {r["rate"]: r for name, r in rows if name.startswith("bare")}
    lines = [f"# Control plane at fixed arrival rates ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}. Command: `make bench-api` (bench/api.py), {seconds} s per row, one run. "
             "Open loop (bench/openloop.py, its own process on the same cores): latency from each request's due "
             "time; \"gen CPU\" is the generator's share of one core, \"gen lag\" how late it sent (p99). "
             "The floor is the same run's bare aiohttp handler at the same rate.", "",
             "| target | rate asked | reached | p50 ms | p99 ms | p99 / floor | errors | gen CPU | gen lag ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        base = floor.get(r["rate"])
        ratio = f"{r['p99'] / base['p99']:.1f}x" if base else "-"
        errors = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items() if not k.startswith("2")) or "0"
        lines.append(f"| {name} | {r['rate']:,.0f} | {r['reached']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                     f"{ratio} | {errors} | {r['generator_core_share']:.0%} | {r['generator_lag_p99']:.1f} |")
    lines += ["", f"The default encoder's raw rate (use-multilingual-v3 called in this process, batches of 64, "
              f"before the services started): {raw_rate:,.0f} texts/s; {RAW_SHARE:.0%} of it is "
              f"{raw_rate * RAW_SHARE:,.0f}/s.", "",
              "| login (scrypt N=2^15, r=8, p=1; wrk, 4 connections) | value |", "|---|---:|",
              f"| logins/s through POST /api/v1/auth/login | {login['rps']:.1f} |",
              f"| login p50 / p99 ms | {login['p50']:.0f} / {login['p99']:.0f} |",
              f"| scrypt hashes/s in one process, one thread | {hashes:.1f} |",
              f"| non-2xx logins | {login['errors']:.0f} |", ""]
    out = HERE / "results" / "api-openloop-vm.md"
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    main(parser.parse_args().seconds)
