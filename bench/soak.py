"""make soak: the whole box under load for SOAK_MINUTES (30), a service SIGKILLed every 30 s, the broker
restarted twice, the store frozen once.

What runs is what `make run` starts: mosquitto with the shipped settings (config/mosquitto/
appliance.conf, persistence in the run's folder), `appliance run` (the development supervisor, which
restarts what dies), the default embedding encoder. The chat model is a tiny random GGUF: the soak
measures the plumbing, and a real model's answers would only slow the tasks and chats down.

Load (bench/soakload.py, processes of their own, and this process):
- 50 devices, 1,000 QoS 1 events/s in total, one device flushing 500 at once every 20 s;
- 50 WebSocket /control clients subscribed to devices, tasks and metrics, reconnecting;
- REST at fixed times: readers (health, tasks, memory search, devices) 20/s, a memory written
  5/s, a task every 2 s (ask, notify, search in turn), a chat every 5 s.

Faults: every 30 s one of store, engine, mqtt, agent and api, at random, is SIGKILLed; at a third
and two thirds of the run the broker is stopped (SIGTERM: it saves its store) and started again; at
half time the store is frozen (SIGSTOP) for FREEZE_S, longer than any caller waits (a stalled disk, a
swapped-out process): its health stops answering, so the api answers 503 for what needs it, and the
box must catch up afterwards.

Pass, each a line of the results; the command exits 1 when one fails:
1. every event the broker acknowledged is stored, and none is stored twice (the SQLite file, read
   after the box stopped);
2. every task created ends in a final state within FINAL_WAIT_S of the load's end, a failed one
   with its error;
3. no 5xx answer but 503 (a service restarting); refused connections while the api itself
   restarts are counted apart, and so are timeouts (504) of requests sent while the store was
   frozen or within FREEZE_GRACE_S around it;
4. each service's RSS slope under 1 MB/min: least squares over each incarnation that lived at least
   RSS_MIN_LIFE_S, its first RSS_WARMUP_S left out, the longest-lived one judged; only in a run of
   RSS_MIN_RUN_S or more (CI's 5 minutes: reported, "not judged": a few minutes of a process that
   buffers a backlog after a store restart say nothing about a leak);
5. the audit chain verifies (GET /api/v1/audit/verify).
Results: bench/results/soak-vm.md (per-minute table) and bench/results/soak-vm.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from appliance.config import load_config
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from appliance.modelfiles.tinymodel import CHAT_SHAPE, write_tiny_llama
from appliance.protocol.services import SERVICE_NAMES

HERE = Path(__file__).parent
REPO = HERE.parent
KILL_EVERY_S = 30.0
FREEZE_S = 15.0  # longer than the IPC timeout (10 s): every request queued at the store meanwhile is given up
FREEZE_GRACE_S = 10.0  # a request sent this long before the freeze, or after its end, may still time out
FINAL_WAIT_S = 180.0
RSS_MIN_LIFE_S = 240.0
RSS_WARMUP_S = 60.0
RSS_SLOPE_MB_PER_MIN = 1.0
RSS_MIN_RUN_S = 20 * 60
FINAL_STATES = {"succeeded", "failed", "cancelled", "timed_out"}
EVENTS_STORED = "SELECT count(*) FROM memories WHERE kind = 'event' AND source LIKE 'soak-%'"


@dataclass
class Record:
    """What the run saw, in time order (seconds from the start)."""

    requests: list[tuple[float, str, str, float]] = field(default_factory=list)  # t, name, status, ms
    rss: list[tuple[float, str, int, float]] = field(default_factory=list)  # t, service, pid, MB
    stored: list[tuple[float, int]] = field(default_factory=list)  # t, device events in the store
    faults: list[tuple[float, str]] = field(default_factory=list)
    freezes: list[tuple[float, float]] = field(default_factory=list)  # the store stopped, from, to
    tasks: list[int] = field(default_factory=list)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(folder: Path, port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"persistence_location {folder}/",
             *(["user root"] if os.geteuid() == 0 else []), (REPO / "config/mosquitto/appliance.conf").read_text()]
    conf.write_text("\n".join(lines) + "\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (folder / "mosquitto.log").open("ab")
    return subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)


def service_pids(config_file: Path) -> dict[str, int]:
    """The live pid of each service of this run (its command line names this run's config)."""
    found: dict[str, int] = {}
    marker = str(config_file).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if marker in argv and b"serve" in argv:
                found[argv[argv.index(b"serve") + 1].decode()] = int(entry.name)
    return found


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


async def tokens(config_file: Path) -> str:
    """An admin app token for the run (made in-process as the box's own console would)."""
    config = load_config(config_file)
    peers = Peers(config)
    try:
        dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("soak"))
        made = await dispatcher.call("tokens.create", {"name": "soak", "role": "admin", "ttl_s": 86_400},
                                     Caller.local())
        return made.token  # type: ignore[attr-defined,no-any-return]
    finally:
        await peers.close()


class Rest:
    """Requests sent at fixed times (open loop); each one's status and latency recorded."""

    def __init__(self, base: str, token: str, record: Record, started: float) -> None:
        self.base, self.record, self.started = base, record, started
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=60))

    async def send(self, name: str, method: str, path: str, body: Any = None) -> Any:
        began = time.monotonic()
        reply: Any = None
        try:
            async with self.session.request(method, self.base + path, json=body, headers=self.headers) as answer:
                raw = await answer.read()
                status = str(answer.status)
                if answer.content_type == "application/json":
                    with contextlib.suppress(ValueError):
                        reply = json.loads(raw)
        except (aiohttp.ClientConnectionError, OSError):
            status = "down"  # the api itself is restarting
        except TimeoutError:
            status = "timeout"
        self.record.requests.append((began - self.started, name, status, (time.monotonic() - began) * 1000))
        return reply

    async def task(self, n: int) -> None:
        kind = ("ask", "notify", "search")[n % 3]
        body = {"kind": kind, "query": f"what did soak-{n % 50:02d} report?"} if kind != "notify" else \
            {"kind": "notify", "message": f"soak note {n}"}
        made = await self.send("POST /api/v1/tasks", "POST", "/api/v1/tasks", body)
        if isinstance(made, dict) and isinstance(made.get("id"), int):
            self.record.tasks.append(made["id"])

    def schedule(self, seconds: float) -> list[tuple[float, Any]]:
        """(due, coroutine factory) for the whole run, sorted."""
        plan: list[tuple[float, Any]] = []
        reads = [("GET /api/v1/health", "/api/v1/health"), ("GET /api/v1/tasks", "/api/v1/tasks?limit=20"),
                 ("GET /api/v1/memory/search", "/api/v1/memory/search?q=soak%20reading&k=5"),
                 ("GET /api/v1/devices", "/api/v1/devices")]
        for i in range(int(seconds * 20)):
            name, path = reads[i % len(reads)]
            plan.append((i / 20, lambda name=name, path=path: self.send(name, "GET", path)))
        for i in range(int(seconds * 5)):
            plan.append((i / 5 + 0.1, lambda i=i: self.send("POST /api/v1/memory", "POST", "/api/v1/memory",
                                                            {"text": f"soak note {i}: valve V-{i % 9} checked"})))
        for i in range(int(seconds / 2)):
            plan.append((i * 2 + 0.3, lambda i=i: self.task(i)))
        for i in range(int(seconds / 5)):
            plan.append((i * 5 + 0.7, lambda i=i: self.send("POST /api/v1/chat", "POST", "/api/v1/chat",
                                                            {"message": f"status of valve V-{i % 9}?",
                                                             "max_tokens": 16})))
        return sorted(plan, key=lambda item: item[0])

    async def close(self) -> None:
        await self.session.close()


async def drive(rest: Rest, seconds: float) -> None:
    pending: set[asyncio.Task[Any]] = set()
    for due, make in rest.schedule(seconds):
        if (delay := rest.started + due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(make())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(set(pending))


async def faults(config_file: Path, broker: list[subprocess.Popen[bytes]], broker_dir: Path, port: int,
                 record: Record, started: float, seconds: float) -> None:
    # Between two kills, never on one: the broker restarts at 1/3 and 2/3, the store's freeze at 1/2.
    scheduled = sorted([(seconds / 3 + KILL_EVERY_S / 2, "restart"), (2 * seconds / 3 + KILL_EVERY_S / 2, "restart"),
                        (seconds / 2 + KILL_EVERY_S / 4, "freeze")])
    at = KILL_EVERY_S
    while at < seconds:
        if scheduled and scheduled[0][0] < at:
            when, what = scheduled.pop(0)
            await asyncio.sleep(max(0.0, started + when - time.monotonic()))
            if what == "restart":
                broker[0].terminate()
                await asyncio.to_thread(broker[0].wait, 30)
                broker[0] = await asyncio.to_thread(start_broker, broker_dir, port)
                record.faults.append((time.monotonic() - started, "broker restarted"))
            elif pid := (await asyncio.to_thread(service_pids, config_file)).get("store"):
                await freeze(pid, record, started)
            continue
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        victim = random.choice(SERVICE_NAMES)
        if pid := (await asyncio.to_thread(service_pids, config_file)).get(victim):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            record.faults.append((time.monotonic() - started, f"SIGKILL {victim}"))
        at += KILL_EVERY_S


async def freeze(pid: int, record: Record, started: float) -> None:
    """The store stopped for FREEZE_S, then let go (SIGCONT even if this task is cancelled)."""
    began = time.monotonic() - started
    try:
        os.kill(pid, signal.SIGSTOP)
        record.faults.append((began, f"store frozen {FREEZE_S:g} s"))
        await asyncio.sleep(FREEZE_S)
    except ProcessLookupError:
        return
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    record.freezes.append((began, time.monotonic() - started))


async def sample(config_file: Path, db: Path, record: Record, started: float, seconds: float) -> None:
    """Every 5 s: each service's RSS, and how many device events the store holds (read-only)."""
    while (now := time.monotonic() - started) < seconds:
        for name, pid in (await asyncio.to_thread(service_pids, config_file)).items():
            if (mb := rss_mb(pid)) is not None:
                record.rss.append((now, name, pid, mb))
        with contextlib.suppress(sqlite3.Error):
            rows = await asyncio.to_thread(read_db, db, EVENTS_STORED)
            record.stored.append((now, rows[0][0]))
        await asyncio.sleep(5.0)


def read_db(path: Path, query: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute(query).fetchall()


def spawn(command: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else None
    return subprocess.Popen(command, stdout=out, stderr=out, cwd=REPO)


@dataclass
class Box:
    """The box of the run: its config, its broker (replaced when restarted) and `appliance run`."""

    folder: Path
    config_file: Path
    api_port: int
    mqtt_port: int
    broker: list[subprocess.Popen[bytes]]
    supervisor: subprocess.Popen[bytes]

    @classmethod
    def start(cls, folder: Path) -> Box:
        chat = write_tiny_llama(folder / "models" / "chat.gguf", CHAT_SHAPE, seed=0)
        api_port, mqtt_port = free_port(), free_port()
        config_file = folder / "agent.yaml"
        config_file.write_text(yaml.safe_dump({
            "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
            "engine": {"chat_model": str(chat), "n_ctx": 1024},
            "api": {"host": "127.0.0.1", "port": api_port},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "appliance-soak"},
            "logging": {"level": "warning"},
        }))
        broker = [start_broker(folder / "broker", mqtt_port)]
        supervisor = spawn([sys.executable, "-m", "appliance", "--config", str(config_file), "run"],
                           folder / "box.log")
        return cls(folder, config_file, api_port, mqtt_port, broker, supervisor)

    def stop(self) -> None:
        self.supervisor.terminate()
        try:
            self.supervisor.wait(60)
        except subprocess.TimeoutExpired:
            self.supervisor.kill()
        self.broker[0].terminate()
        self.broker[0].wait(30)


async def run(seconds: float, box: Box) -> tuple[Record, dict[str, Any]]:
    folder, config_file, mqtt_port, broker, broker_dir = (box.folder, box.config_file, box.mqtt_port, box.broker,
                                                          box.folder / "broker")
    config = load_config(config_file)
    base = f"http://127.0.0.1:{box.api_port}"
    record = Record()
    loads: list[subprocess.Popen[bytes]] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{base}/api/v1/health") as answer:
                        if (await answer.json()).get("status") == "ready":
                            break
                await asyncio.sleep(0.5)
            else:
                raise TimeoutError(f"the box never became ready (its log: {folder / 'box.log'})")
        token = await tokens(config_file)
        devices_out, sockets_out = folder / "devices.json", folder / "sockets.json"
        module = [sys.executable, "-m", "bench.soakload"]
        loads = await asyncio.gather(
            asyncio.to_thread(spawn, [*module, "devices", str(mqtt_port), str(devices_out)]),
            asyncio.to_thread(spawn, [*module, "sockets", f"{base}/control", token, str(sockets_out)]))
        db = config.memory_dir / "memory.db"
        started = time.monotonic()
        rest = Rest(base, token, record, started)
        try:
            await asyncio.gather(drive(rest, seconds), sample(config_file, db, record, started, seconds),
                                 faults(config_file, broker, broker_dir, mqtt_port, record, started, seconds))
            for load in loads:
                load.send_signal(signal.SIGTERM)
            for load in loads:
                await asyncio.to_thread(load.wait, 120)
            devices = json.loads(devices_out.read_text())
            sockets = json.loads(sockets_out.read_text())
            acked = set(devices["acked"])
            stored_count = 0
            deadline = time.monotonic() + FINAL_WAIT_S
            while time.monotonic() < deadline:  # the bridge and the store catch up with the backlog
                stored_count = (await asyncio.to_thread(read_db, db, EVENTS_STORED))[0][0]
                open_tasks = (await asyncio.to_thread(read_db, db, "SELECT count(*) FROM tasks WHERE state NOT IN "
                                                      "('succeeded', 'failed', 'cancelled', 'timed_out')"))[0][0]
                if stored_count >= len(acked) and open_tasks == 0:
                    break
                await asyncio.sleep(2.0)
            audit = await rest.send("GET /api/v1/audit/verify", "GET", "/api/v1/audit/verify")
        finally:
            await rest.close()
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
        await asyncio.to_thread(box.stop)
    stored = Counter(row[0] for row in read_db(db, "SELECT json_extract(text, '$.id') FROM memories "
                                                   "WHERE kind = 'event' AND source LIKE 'soak-%'"))
    tasks = read_db(db, "SELECT id, state, error FROM tasks")
    return record, {"devices": devices, "sockets": sockets, "stored": stored, "tasks": tasks, "audit": audit}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0


def rss_verdicts(record: Record, seconds: float) -> dict[str, tuple[str, float | None, float]]:
    """Per service: (verdict, slope of its longest-lived judged incarnation, that incarnation's life in s)."""
    lives: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for t, name, pid, mb in record.rss:
        lives[(name, pid)].append((t, mb))
    out: dict[str, tuple[str, float | None, float]] = {}
    for name in SERVICE_NAMES:
        longest = max(((pts[-1][0] - pts[0][0], pts) for (n, _), pts in lives.items() if n == name),
                      key=lambda item: item[0], default=(0.0, []))
        life, points = longest
        if life < RSS_MIN_LIFE_S:
            out[name] = ("not judged", None, life)
            continue
        kept = [(t, mb) for t, mb in points if t - points[0][0] >= RSS_WARMUP_S]
        value = slope(kept)
        verdict = "pass" if value < RSS_SLOPE_MB_PER_MIN else "FAIL"
        out[name] = (verdict if seconds >= RSS_MIN_RUN_S else "not judged (a short run)", value, life)
    return out


def report(record: Record, seen: dict[str, Any], seconds: float, out_md: Path, out_png: Path) -> bool:
    acked, sent = set(seen["devices"]["acked"]), seen["devices"]["sent"]
    stored: Counter[str] = seen["stored"]
    lost = acked - set(stored)
    twice = {k: v for k, v in stored.items() if v > 1}
    unfinished = [(i, s) for i, s, _ in seen["tasks"] if s not in FINAL_STATES]
    silent = [i for i, s, e in seen["tasks"] if s == "failed" and not e]
    frozen = [(t, status) for t, _, status, _ in record.requests if status == "504" and any(
        start - FREEZE_GRACE_S <= t <= end + FREEZE_GRACE_S for start, end in record.freezes)]
    statuses = Counter(status for _, _, status, _ in record.requests)
    statuses.subtract(Counter(status for _, status in frozen))
    statuses += Counter()  # drops the zero counts
    bad = {s: n for s, n in statuses.items() if s.isdigit() and int(s) >= 500 and s != "503"}
    bad.update({s: n for s, n in statuses.items() if s == "timeout"})
    audit = seen["audit"] or {}
    rss = rss_verdicts(record, seconds)
    checks = [
        ("every acknowledged event stored", not lost, f"{len(acked):,} acknowledged of {len(sent):,} sent; "
                                                       f"{len(stored):,} distinct stored; {len(lost):,} lost"),
        ("no event stored twice", not twice, f"{len(twice):,} stored more than once"),
        ("every task final, a failed one with its error", not unfinished and not silent,
         f"{len(seen['tasks'])} tasks: " + ", ".join(f"{s} {n}" for s, n in
                                                     Counter(s for _, s, _ in seen["tasks"]).most_common())
         + (f"; not final: {unfinished[:5]}" if unfinished else "") + (f"; failed without error: {silent[:5]}"
                                                                        if silent else "")),
        ("no 5xx but 503, no timeouts", not bad, f"statuses: {dict(statuses.most_common())}; "
                                                  f"504 while the store was frozen (counted apart): {len(frozen)}"),
        ("RSS slope under 1 MB/min", all(v != "FAIL" for v, _, _ in rss.values()),
         "; ".join(f"{n} {v}" + (f" {s:+.2f} MB/min over {life / 60:.0f} min" if s is not None else
                                  f" (longest life {life:.0f} s)") for n, (v, s, life) in rss.items())),
        ("the audit chain verifies", bool(audit.get("ok")), f"{audit}"),
    ]
    minutes = int(seconds // 60) or 1
    acked_per_s = dict(seen["devices"]["acked_per_s"])
    frames = dict(seen["sockets"]["frames_per_s"])
    first_ack = min(acked_per_s) if acked_per_s else 0
    first_frame = min(frames) if frames else 0
    rows = []
    for m in range(minutes):
        in_minute = [r for r in record.requests if m * 60 <= r[0] < (m + 1) * 60]
        ms = [r[3] for r in in_minute if r[2].startswith("2")]
        acks = sum(n for s, n in acked_per_s.items() if m * 60 <= s - first_ack < (m + 1) * 60) / 60
        fps = sum(n for s, n in frames.items() if m * 60 <= s - first_frame < (m + 1) * 60) / 60
        ws_ms = seen["sockets"]["latency_by_minute"]
        ws_minute = sorted(ws_ms)[m] if m < len(ws_ms) else None
        rss_at = {n: max((mb for t, name, _, mb in record.rss if name == n and m * 60 <= t < (m + 1) * 60),
                         default=float("nan")) for n in SERVICE_NAMES}
        kills = [f for t, f in record.faults if m * 60 <= t < (m + 1) * 60]
        inside = [(t, n) for t, n in record.stored if m * 60 <= t < (m + 1) * 60]
        stored_rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else 0.0
        rows.append({"minute": m + 1, "acks": acks, "stored": stored_rate, "requests": len(in_minute),
                     "p99": percentile(ms, 99),
                     "503": sum(r[2] == "503" for r in in_minute), "down": sum(r[2] == "down" for r in in_minute),
                     "fps": fps, "ws_p99": percentile(ws_ms[ws_minute], 99) if ws_minute else float("nan"),
                     "rss": rss_at, "faults": kills})
    lines = [f"# Soak with faults ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}. Command: `make soak` (bench/soak.py), {seconds / 60:.0f} minutes, one run. "
             "Load: 50 devices at 1,000 QoS 1 events/s with a 500-event burst every 20 s, 50 WebSocket clients, "
             "REST readers 20/s, memory writes 5/s, a task every 2 s, a chat every 5 s; a service SIGKILLed every "
             f"30 s, the broker restarted twice, the store frozen (SIGSTOP) for {FREEZE_S:g} s at half time. "
             "The load generators share the box's 2 cores.", "",
             "| check | verdict | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |" for name, ok, detail in checks]
    lines += ["", "| minute | events acked/s | events stored/s | REST requests | REST p99 ms (2xx) | 503 | api down | "
              "WS frames/s | WS p99 ms | RSS MB " + " / ".join(SERVICE_NAMES) + " | faults |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['minute']} | {r['acks']:,.0f} | {r['stored']:,.0f} | {r['requests']:,} | {r['p99']:.0f} | "
                     f"{r['503']} | {r['down']} | {r['fps']:,.0f} | {r['ws_p99']:.0f} | "
                     + " / ".join(f"{r['rss'][n]:.0f}" for n in SERVICE_NAMES) + f" | {'; '.join(r['faults'])} |")
    by_route: dict[str, Counter[str]] = defaultdict(Counter)
    for _, name, status, _ in record.requests:
        by_route[name][status] += 1
    lines += ["", "| route | answers |", "|---|---|"]
    lines += [f"| {name} | {', '.join(f'{s}: {n:,}' for s, n in sorted(c.items()))} |"
              for name, c in sorted(by_route.items())]
    lines += ["", f"WebSocket reconnects (the api killed): {seen['sockets']['reconnects']}. "
              f"Plot: {out_png.name} (throughput, p99, RSS per service over time; the faults marked).", ""]
    out_md.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    plot(record, seen, seconds, out_png)
    return all(ok for _, ok, _ in checks)


def plot(record: Record, seen: dict[str, Any], seconds: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    acked = seen["devices"]["acked_per_s"]
    if acked:
        first = acked[0][0]
        top.plot([(s - first) / 60 for s, _ in acked], [n for _, n in acked], lw=0.6, label="events acknowledged/s")
    pairs = list(zip(record.stored, record.stored[1:], strict=False))
    top.plot([b[0] / 60 for _, b in pairs], [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs], lw=1.0,
             label="events stored/s (5 s)")
    top.set_ylabel("events/s")
    by_ten: dict[int, list[float]] = defaultdict(list)
    for t, _, status, ms in record.requests:
        if status.startswith("2") and t < seconds:
            by_ten[int(t // 10)].append(ms)
    middle.plot([k / 6 for k in sorted(by_ten)], [percentile(by_ten[k], 99) for k in sorted(by_ten)],
                label="REST p99 (10 s windows)")
    middle.set_ylabel("ms")
    middle.set_yscale("log")
    for name in SERVICE_NAMES:
        points = [(t / 60, mb) for t, n, _, mb in record.rss if n == name]
        bottom.plot([t for t, _ in points], [mb for _, mb in points], lw=0.8, label=name)
    bottom.set_ylabel("RSS MB")
    bottom.set_xlabel("minutes")
    for axis in (top, middle, bottom):
        for t, what in record.faults:
            axis.axvline(t / 60, color="red" if "broker" in what else "grey", lw=0.4, alpha=0.6)
        axis.legend(loc="upper right", fontsize=7)
    figure.suptitle("make soak: throughput, REST p99 and RSS (grey: a service SIGKILLed; red: broker restarted)")
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "30")))
    args = parser.parse_args()
    seconds = args.minutes * 60
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    box = Box.start(folder)
    try:
        record, seen = asyncio.run(run(seconds, box))
    finally:
        box.stop()
    (folder / "record.json").write_text(json.dumps({"requests": record.requests, "rss": record.rss,
                                                    "stored": record.stored, "faults": record.faults,
                                                    "freezes": record.freezes}))
    results = HERE / "results"
    passed = report(record, seen, seconds, results / "soak-vm.md", results / "soak-vm.png")
    sys.stdout.write(f"soak: {'passed' if passed else 'FAILED'}; the run's files: {folder}\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
