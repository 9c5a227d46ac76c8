"""make bench-realtime: WebSocket /control fan-out and the OpenAI API's streaming, in one run.

Real store, engine and api processes (the api on loopback, plain HTTP), the real Qwen2.5-Coder-0.5B:

1. fan-out: --clients (500) WebSocket clients subscribed to the metrics topic, an event a second
   each, for --seconds: delivery latency (receive time minus the event's `at`, the moment the
   hub read it; one clock) p50/p99/max, and the api process's CPU over the run. The clients are
   split across --client-processes (4) processes of their own (before, all 500 in one process
   put that process's event-loop lag into every latency); they share the box's cores with the api.
2. streaming: decode tokens/s of /v1/chat/completions through the official openai client (SSE)
   vs the engine over IPC, the same greedy chat request, runs alternating; median of the ratios
   (goal >= 0.97).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import openai
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from engine import CACHE, free_port, machine, wait_ready

from appliance.config import load_config
from appliance.ipc import IpcClient
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.fetch import fetch
from appliance.modelfiles.packaged import QWEN_05B
from appliance.modelfiles.tinymodel import embedding_shape, write_tiny_llama
from appliance.protocol.engine import ENGINE_GENERATE, ChatMessage, GenerateRequest

HERE = Path(__file__).parent
STORY = "Write a long, detailed story about a warehouse robot that guards the loading dock at night."


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def listen_clients(port: int, token: str, clients: int, started: float, seconds: float) -> list[float]:
    """One client process's share: connect and subscribe ``clients`` sockets, then, from ``started``
    (a wall-clock time shared by every process) for ``seconds``, each event's receive time minus its ``at``."""
    latencies: list[float] = []
    # No connector limit: aiohttp's default (100) would hold the 101st socket back for ever.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for _ in range(clients):
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/control",
                                          headers={"Authorization": f"Bearer {token}"})
            await ws.receive_json()  # ready
            await ws.send_json({"type": "subscribe", "topics": ["metrics"]})
            sockets.append(ws)

        async def listen(ws: aiohttp.ClientWebSocketResponse, until: float) -> None:
            while (left := until - time.time()) > 0:
                try:
                    frame = await ws.receive_json(timeout=left)
                except (TimeoutError, TypeError):
                    return
                if frame.get("type") == "event" and frame["at"] >= started:  # read on arrival from the start
                    latencies.append((time.time() - frame["at"]) * 1000)

        await asyncio.gather(*(listen(ws, started + seconds) for ws in sockets))
        for ws in sockets:
            await ws.close()
    return latencies


async def fan_out(port: int, tokens: list[str], clients: int, seconds: float, api_pid: int,
                  processes: int) -> tuple[list[float], float]:
    """The clients split across ``processes`` processes of their own, so that one process's event-loop
    lag is not in every client's latency; the api process's CPU over the listening window."""
    started = time.time() + 3.0 + clients / 100  # every client connected, subscribed and past its snapshot
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    children = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--listen", str(port), token, str(share), str(started), str(seconds),
        stdout=asyncio.subprocess.PIPE) for share, token in zip(shares, tokens, strict=True)]
    await asyncio.sleep(max(0.0, started - time.time()))
    cpu_before = cpu_s(api_pid)
    outputs = await asyncio.gather(*(child.communicate() for child in children))
    cpu = cpu_s(api_pid) - cpu_before
    return [latency for out, _ in outputs for latency in json.loads(out)], cpu


async def streaming(port: int, token: str, engine: IpcClient, runs: int, tokens: int) -> list[tuple[float, float]]:
    oai = openai.AsyncOpenAI(api_key=token, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=300)

    async def via_ipc() -> float:
        first = last = 0.0
        async for chunk in engine.stream(ENGINE_GENERATE, GenerateRequest(
                messages=[ChatMessage(role="user", content=STORY)], max_tokens=tokens, temperature=0.0)):
            now = time.perf_counter()
            first = first or now
            last = now
            if chunk.done:
                return (chunk.completion_tokens - 1) / (last - first)
        raise RuntimeError("no final chunk")

    async def via_openai() -> float:
        first = last = 0.0
        count = 0
        stream = await oai.chat.completions.create(model="any", messages=[{"role": "user", "content": STORY}],
                                                   max_tokens=tokens, temperature=0, stream=True,
                                                   stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                count = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
        return (count - 1) / (last - first)

    await via_ipc()
    pairs = [(await via_ipc(), await via_openai()) for _ in range(runs)]
    await oai.close()
    return pairs


async def measure(config: Path, args: argparse.Namespace, api_pid: int
                  ) -> tuple[list[float], float, list[tuple[float, float]]]:
    loaded = load_config(config)
    clients = {name: IpcClient(name, loaded.socket_path(name), 300.0) for name in ("store", "engine", "api")}
    try:
        for client in clients.values():
            await wait_ready(client)
        async def token_of(name: str) -> str:
            made = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "appliance", "--config", str(config), "token", "create", "--role", "viewer",
                "--name", name], capture_output=True, text=True, check=True)
            return made.stdout.split()[-1]

        # A token per client process: as many users as processes (each user's share of /control
        # places is api.websocket.max_clients_per_user).
        token = await token_of("realtime")
        listeners = [await token_of(f"realtime-{n}") for n in range(args.client_processes)]
        latencies, cpu = await fan_out(loaded.api.port, listeners, args.clients, args.seconds, api_pid,
                                       args.client_processes)
        return latencies, cpu, await streaming(loaded.api.port, token, clients["engine"], args.runs, args.tokens)
    finally:
        for client in clients.values():
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--listen", nargs=5, metavar=("PORT", "TOKEN", "CLIENTS", "STARTED", "SECONDS"),
                        help="run as one client process of the fan-out (internal)")
    args = parser.parse_args()
    if args.listen:
        port, token, clients, started, seconds = args.listen
        sys.stdout.write(json.dumps(asyncio.run(listen_clients(int(port), token, int(clients), float(started),
                                                               float(seconds)))))
        return
    catalog = Catalog(CACHE / "models")
    entry = catalog.entries().get(QWEN_05B.name) or fetch(QWEN_05B, catalog)
    work = CACHE / "realtime-run"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = work / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(work / "state"), "runtime_dir": str(work / "run")},
        "engine": {"chat_model": str(catalog.directory / entry.file), "n_ctx": 4096,
                   "embedding_encoder": "gguf",
                   "embedding_model": str(write_tiny_llama(CACHE / "bench-embedding.gguf", embedding_shape(384)))},
        "api": {"host": "127.0.0.1", "port": port}, "mqtt": {"port": free_port()}, "logging": {"level": "warning"}}))
    processes = {name: subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "serve", name])
                 for name in ("store", "engine", "api")}
    try:
        latencies, cpu, pairs = asyncio.run(measure(config, args, processes["api"].pid))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(30)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    ipc, via_api = (statistics.median(column) for column in zip(*pairs, strict=True))
    ratio = statistics.median(o / i for i, o in pairs)
    table = "\n".join([
        "# Realtime benchmark: WebSocket fan-out and OpenAI streaming\n",
        f"Machine: {machine()}",
        f"Command: make bench-realtime ({args.clients} clients, {args.seconds:g} s; {args.runs} streaming runs of "
        f"{args.tokens} tokens, greedy, Qwen2.5-Coder-0.5B-Instruct Q4_K_M)\n",
        "| fan-out: metrics events to every client | value |",
        "|---|---|",
        f"| clients | {args.clients}, in {args.client_processes} processes of their own |",
        f"| events delivered | {len(latencies)} |",
        f"| delivery latency p50 / p99 / max | {q[49]:.1f} / {q[98]:.1f} / {latencies[-1]:.1f} ms |",
        f"| api process CPU over the run | {cpu:.2f} s in {args.seconds:g} s ({100 * cpu / args.seconds:.0f} % "
        f"of a core; {1000 * cpu / max(1, len(latencies)):.2f} ms per delivered event) |",
        "",
        "| streaming decode tok/s (median) | engine over IPC | /v1/chat/completions (openai client, SSE) | ratio "
        "| goal |",
        "|---|---|---|---|---|",
        f"| {args.runs} runs, alternating | {ipc:.2f} | {via_api:.2f} | {ratio:.3f} | >= 0.97 |",
    ]) + "\n"
    sys.stdout.write(table)
    (HERE / "results" / "realtime-vm.md").write_text(table)


if __name__ == "__main__":
    main()
