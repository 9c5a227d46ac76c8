"""make bench-engine: the engine service over IPC against raw llama-cpp-python and llama-server.

All three run the same GGUF (a generated ~0.5B llama-shaped Q8_0 model: random weights cost the
same compute as trained ones), the same thread count, greedy sampling, one after another so
they never compete for the cores, in one run so the ratios are fair on a noisy machine:

1. one stream, raw llama-cpp-python in this process (its `Llama.generate` loop, detokenizing
   each token) vs the engine service process over its Unix socket: decode tokens/s and time
   to first token (goal: ratio >= 0.97, added TTFT <= 5 ms);
2. aggregate tokens/s with 1, 2 and 4 concurrent streams, engine vs llama.cpp's own
   llama-server built from the llama.cpp that llama-cpp-python vendors (bench/build-llama-server.sh),
   with the same context, batch sizes, flash attention and a unified KV cache (goal >= 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import llama_cpp
import yaml

from appliance.config import load_config
from appliance.ipc import IpcClient
from appliance.modelfiles.tinymodel import BENCH_SHAPE, embedding_shape, write_tiny_llama
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.engine import ENGINE_GENERATE, GenerateRequest

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
N_CTX = 4096
TOPICS = ["loading dock", "cold room", "north gate", "boiler", "server rack", "parking barrier", "roof hatch",
          "water tank"]


def prompt(i: int) -> str:
    """~170 tokens, different per stream, for the throughput runs."""
    topic = TOPICS[i % len(TOPICS)]
    return (f"Report {i}: the {topic} sensor sent an event at night. Summarise what happened at the {topic}, "
            "what the staff should check first, and whether anyone must be called. ") * 2


def short_prompt(i: int) -> str:
    """~50 tokens (this vocabulary spells most words in bytes): a long prefill would bury a few ms
    of IPC overhead in its own noise."""
    return f"Report {i}: the {TOPICS[i % len(TOPICS)]} door opened."


def raw_llama(model: Path, threads: int) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(model), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, n_batch=2048,
                           n_ubatch=512, flash_attn=True, verbose=False)


def raw_stream(llm: llama_cpp.Llama, i: int, tokens: int) -> tuple[float, float]:
    """(ttft ms, decode tokens/s) of one in-process stream, detokenizing as a consumer would."""
    llm.reset()  # type: ignore[no-untyped-call]  # no prompt cache: every run reads its whole prompt
    started = time.perf_counter()
    ids = llm.tokenize(short_prompt(i).encode())
    first = 0.0
    count = 0
    for token in llm.generate(ids, temp=0.0):
        llm.detokenize([token])
        if count == 0:
            first = time.perf_counter()
        count += 1
        if token == llm.token_eos() or count == tokens:
            break
    return (first - started) * 1000, (count - 1) / (time.perf_counter() - first)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_engine(model: Path, threads: int, workdir: Path) -> tuple[subprocess.Popen[bytes], IpcClient]:
    embedding = write_tiny_llama(CACHE / "bench-embedding.gguf", embedding_shape(384), seed=1)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "engine.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(workdir / "state"), "runtime_dir": str(workdir / "run")},
        "engine": {"chat_model": str(model), "embedding_encoder": "gguf",
                   "embedding_model": str(embedding), "n_ctx": N_CTX,
                   "n_threads": threads, "kv_type": "f16"},
        "resource": {"max_concurrency": 4, "gpu_enabled": False}, "logging": {"level": "warning"}}))
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "serve", "engine"])
    return process, IpcClient("engine", load_config(config).socket_path("engine"), 120.0)


async def wait_ready(client: IpcClient) -> None:
    for _ in range(600):
        try:
            if (await client.call(HEALTH, timeout_s=1.0)).state is ServiceState.READY:
                return
        except Exception:  # noqa: S110 - not up yet; keep asking
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the engine did not become ready")


async def engine_stream(client: IpcClient, i: int, tokens: int, short: bool = False) -> tuple[float, float, int, float]:
    """(ttft ms at the client, decode tokens/s, tokens, ttft ms inside the engine) of one stream."""
    started = time.perf_counter()
    first = 0.0
    text = short_prompt(i) if short else prompt(i)
    async for chunk in client.stream(ENGINE_GENERATE, GenerateRequest(prompt=text, max_tokens=tokens,
                                                                      temperature=0.0)):
        if not first:
            first = time.perf_counter()
        if chunk.done:
            done = time.perf_counter()
            return ((first - started) * 1000, (chunk.completion_tokens - 1) / (done - first),
                    chunk.completion_tokens, chunk.ttft_ms)
    raise RuntimeError("stream ended without a final chunk")


async def single_pairs(client: IpcClient, llm: llama_cpp.Llama, tokens: int, runs: int) -> list[tuple[float, ...]]:
    """Raw and engine streams on the same prompt, alternating (the idle one uses no CPU)."""
    raw_stream(llm, 99, tokens)
    await engine_stream(client, 99, tokens, short=True)  # warm-up both
    pairs: list[tuple[float, ...]] = []
    for run in range(runs):
        raw_ttft, raw_rate = raw_stream(llm, run, tokens)
        eng_ttft, eng_rate, _, inside = await engine_stream(client, run, tokens, short=True)
        pairs.append((raw_ttft, eng_ttft, raw_rate, eng_rate, inside))
    return pairs


async def engine_aggregate(client: IpcClient, tokens: int) -> dict[int, float]:
    aggregate = {}
    for streams in (1, 2, 4):
        started = time.perf_counter()
        results = await asyncio.gather(*(engine_stream(client, 10 * streams + i, tokens) for i in range(streams)))
        aggregate[streams] = sum(r[2] for r in results) / (time.perf_counter() - started)
    return aggregate


def start_server(binary: Path, model: Path, threads: int, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                "-t", str(threads), "-tb", str(threads), "-c", str(N_CTX), "-np", "4", "-kvu",
                                "-fa", "on", "-b", "2048", "-ub", "512", "-ngl", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def server_ready(session: aiohttp.ClientSession, url: str, timeout_s: float = 120.0) -> None:
    """Until llama-server's /health answers 200 (it loads the model first)."""
    for _ in range(int(timeout_s * 10)):
        try:
            async with session.get(f"{url}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"llama-server at {url} did not become ready")


async def server_runs(process: subprocess.Popen[bytes], port: int, tokens: int) -> dict[int, float]:
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await server_ready(session, url)

            async def one(i: int) -> int:
                body = {"prompt": prompt(i), "n_predict": tokens, "temperature": 0.0, "cache_prompt": False}
                async with session.post(f"{url}/completion", json=body) as response:
                    return int((await response.json())["tokens_predicted"])

            await one(99)
            aggregate = {}
            for streams in (1, 2, 4):
                started = time.perf_counter()
                counts = await asyncio.gather(*(one(10 * streams + i) for i in range(streams)))
                aggregate[streams] = sum(counts) / (time.perf_counter() - started)
            return aggregate
    finally:
        process.terminate()
        process.wait(10)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}, " \
           f"llama-cpp-python {llama_cpp.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "engine-vm.md")
    args = parser.parse_args()
    model = CACHE / "bench-0.5b-q8_0.gguf"
    if not model.exists():
        write_tiny_llama(model, BENCH_SHAPE, name="bench-llama-0.5b")
    server = Path(subprocess.run([str(HERE / "build-llama-server.sh")], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1])
    process, client = start_engine(model, args.threads, CACHE / "engine-run")
    llm = raw_llama(model, args.threads)

    async def measure() -> tuple[list[tuple[float, ...]], dict[int, float]]:
        try:
            await wait_ready(client)
            return await single_pairs(client, llm, args.tokens, args.runs), await engine_aggregate(client, args.tokens)
        finally:
            await client.close()

    try:
        pairs, eng_agg = asyncio.run(measure())
    finally:
        process.terminate()
        process.wait(30)
        llm.close()
    port = free_port()
    srv_agg = asyncio.run(server_runs(start_server(server, model, args.threads, port), port, args.tokens))
    med = statistics.median
    raw_ttft, eng_ttft, raw_rate, eng_rate, inside = (list(column) for column in zip(*pairs, strict=True))
    rows = [
        "| measure (median over the runs) | raw llama-cpp-python | engine over IPC | engine vs raw | goal |",
        "|---|---|---|---|---|",
        f"| single stream decode tok/s | {med(raw_rate):.2f} | {med(eng_rate):.2f} | "
        f"{med(e / r for e, r in zip(eng_rate, raw_rate, strict=True)):.3f} | >= 0.97 |",
        f"| time to first token, ms | {med(raw_ttft):.1f} | {med(eng_ttft):.1f} | "
        f"{med(e - r for e, r in zip(eng_ttft, raw_ttft, strict=True)):+.1f} ms | <= +5 ms |",
        f"| of which IPC, tokenizing, queueing (client TTFT - engine's own TTFT) | | "
        f"{med(e - i for e, i in zip(eng_ttft, inside, strict=True)):.1f} ms | | |",
        "",
        "| concurrent streams | llama-server tok/s | engine tok/s | engine / llama-server | goal |",
        "|---|---|---|---|---|",
        *(f"| {n} | {srv_agg[n]:.2f} | {eng_agg[n]:.2f} | {eng_agg[n] / srv_agg[n]:.3f} | >= 0.9 |" for n in (1, 2, 4)),
    ]
    size = model.stat().st_size / 2**20
    header = (f"# Engine benchmark\n\nMachine: {machine()}\nModel: {model.name} ({size:.0f} MiB, "
              f"llama shape, 24 blocks, n_embd 1024, 32k vocab, Q8_0, random weights); {args.threads} threads; "
              f"n_ctx {N_CTX}; greedy; {args.tokens} tokens per stream. Single stream: {args.runs} runs, "
              f"raw and engine alternating on the same ~50-token prompt; ratios are medians of the pairs. "
              f"Concurrent: ~170-token prompts, a different one per stream; "
              f"llama-server -np 4 -kvu -fa on -b 2048 -ub 512.\n"
              f"Command: make bench-engine\n\n")
    table = header + "\n".join(rows) + "\n"
    sys.stdout.write(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
