"""make bench-api: the control plane under load, next to a bare aiohttp handler in the same run.

wrk (a second process on loopback, 2 threads, 200 connections, 15 s each) drives:

1. GET /api/v1/health on the real api process (store, engine, agent and api running; mqtt is
   left out, so health also asks one service that is down, as a box without a broker does);
2. GET /api/v1/memory/search?q=... with a bearer token (verified, authorized, embedded by the
   engine, recalled from a store of 2,000 memories);
3. GET / on a bare aiohttp app in its own process that answers a fixed small JSON: the
   framework's floor on this machine.

Then login throughput: POST /api/v1/auth/login with the right password at the shipped scrypt
cost (15) by 4 connections, next to scrypt hashes per second computed in this process, so the
ratio shows what the login path adds to the hash. The per-address login limit is raised for
the run (it exists to stop this very load).
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

import yaml

from appliance.config import load_config
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama
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


def main(seconds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    models = folder / "models"
    chat = write_tiny_llama(models / "chat.gguf", CHAT_SHAPE, seed=0)
    embedding = write_tiny_llama(models / "embedding.gguf", embedding_shape(384), seed=1)
    api_port = free_port()
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "engine": {"chat_model": str(chat), "embedding_encoder": "gguf",
                   "embedding_model": str(embedding), "n_ctx": 1024},
        "api": {"host": "127.0.0.1", "port": api_port},
        "security": {"login_per_ip_per_minute": 10_000},
        "logging": {"level": "warning"},
    }))
    names = ["store", "engine", "agent", "api"]
    processes = [subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", n],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in names]
    bare_port = free_port()
    processes.append(subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)]))
    try:
        token = asyncio.run(prepare(config_file, names))
        rows = {
            "bare aiohttp handler (floor)": wrk(f"http://127.0.0.1:{bare_port}/", seconds=seconds, connections=200),
            "GET /api/v1/health": wrk(f"http://127.0.0.1:{api_port}/api/v1/health", seconds=seconds, connections=200),
            "GET /api/v1/memory/search (token)": wrk(
                f"http://127.0.0.1:{api_port}/api/v1/memory/search?q=door%2012%20gate&k=5", seconds=seconds,
                connections=200, header=f"Authorization: Bearer {token}"),
        }
        script = folder / "login.lua"
        body = json.dumps({"username": "bench", "password": PASSWORD})
        script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(body)}\n")
        login = wrk(f"http://127.0.0.1:{api_port}/api/v1/auth/login", seconds=seconds, connections=4, script=script)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
    write_table(rows, login, scrypt_rate(), seconds)


def write_table(rows: dict[str, dict[str, float]], login: dict[str, float], hashes: float, seconds: int) -> None:
    floor = rows["bare aiohttp handler (floor)"]
    lines = [f"# Control plane under load ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}; wrk on the same machine (2 threads). Command: `make bench-api` "
             f"(bench/api.py), {seconds} s per row, one run.", "",
             "| 200 connections | requests/s | p50 ms | p90 ms | p99 ms | p99 / floor | non-2xx |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
                     f"{r['p99'] / floor['p99']:.1f}x | {r['errors']:.0f} |")
    lines += ["", "| login (scrypt N=2^15, r=8, p=1; 4 connections) | value |", "|---|---:|",
              f"| logins/s through POST /api/v1/auth/login | {login['rps']:.1f} |",
              f"| login p50 / p99 ms | {login['p50']:.0f} / {login['p99']:.0f} |",
              f"| scrypt hashes/s in one process, one thread | {hashes:.1f} |",
              f"| non-2xx logins | {login['errors']:.0f} |", ""]
    out = HERE / "results" / "api-vm.md"
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    main(parser.parse_args().seconds)
