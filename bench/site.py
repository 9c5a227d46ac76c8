"""make bench-site: the site model under load: 2,000 entities discovered at once, then 1,000 state changes
a second, on the real store, mqtt and api processes and a real mosquitto.

1. Discovery: 2,000 Zigbee2MQTT-shaped configs (1,000 sensors and 1,000 switches over 4 bridges), each
   with a retained state, are on the broker before the mqtt service starts (a box restarting into a
   site that is already there). Measured: from the mqtt service's start to the registry complete (every
   entity in the store with its state), and the RSS of the mqtt and store processes then.
2. States: a publisher sends RATE state changes a second for SECONDS seconds (QoS 1, paced in 10 ms
   steps), round the 1,000 sensors; each payload is its own sequence number. One in SAMPLE changes is
   timed publish -> stored (a poller reads that entity from the store every 5 ms) and every change
   publish -> the /control ``entities`` topic (a WebSocket client of the real api).

The table goes to bench/results/site-<machine>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.site import STORE_ENTITIES, STORE_ENTITY, EntityKey, EntityQuery

HERE = Path(__file__).parent
SENSORS = SWITCHES = 1_000
BRIDGES = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def configs() -> list[tuple[str, dict[str, Any], str, str]]:
    """(config topic, config, state topic, state payload) for every entity."""
    found = []
    for n in range(SENSORS + SWITCHES):
        bridge = f"z2m{n % BRIDGES}"
        name = f"dev{n:04d}"
        sensor = n < SENSORS
        component = "sensor" if sensor else "switch"
        config: dict[str, Any] = {
            "name": None, "object_id": name, "unique_id": f"0x{n:016x}_{component}", "state_topic": f"{bridge}/{name}",
            "device": {"identifiers": [f"zigbee2mqtt_0x{n:016x}"], "name": name, "model": "bench"},
            "origin": {"name": bridge}, "value_template": "{{ value_json.value }}" if sensor else
            "{{ value_json.state }}"}
        if not sensor:
            config["command_topic"] = f"{bridge}/{name}/set"
        found.append((f"homeassistant/{component}/0x{n:016x}/{component}/config", config, f"{bridge}/{name}",
                      json.dumps({"value": 0} if sensor else {"state": "OFF"})))
    return found


class Publisher:
    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: str, retain: bool = False) -> Any:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def wait_ready(peers: Peers, name: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(IpcError):
            if (await peers.client(name).call(HEALTH, timeout_s=1.0)).state is ServiceState.READY:  # type: ignore[arg-type]
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{name} not ready")


def start_broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                           "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
                                           + ("user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                               str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return broker, port


def spawn(config_file: Path, name: str) -> subprocess.Popen[bytes]:
    log = (config_file.parent / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", name],
                            stderr=log)


def write_config(folder: Path, broker_port: int) -> Path:
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "bench-site",
                 "home_assistant": {"enabled": False}},
        "api": {"host": "127.0.0.1", "port": free_port()}, "security": {"scrypt_cost": 12}}))
    return config_file


async def run(config_file: Path, broker_port: int, rate: int, seconds: float, sample: int) -> dict[str, Any]:
    config = load_config(config_file)
    api_port = config.api.port
    processes: dict[str, subprocess.Popen[bytes]] = {}
    peers = Peers(config)
    site = Publisher(broker_port, "bench-bridges")
    try:
        entities = configs()
        for topic, body, state_topic, state in entities:
            site.publish(topic, json.dumps(body), retain=True)
            site.publish(state_topic, state, retain=True).wait_for_publish(10)
        for name in ("store", "api"):
            processes[name] = await asyncio.to_thread(spawn, config_file, name)
            await wait_ready(peers, name)
        started = time.monotonic()
        processes["mqtt"] = await asyncio.to_thread(spawn, config_file, "mqtt")
        while True:
            page = await peers.store.call(STORE_ENTITIES, EntityQuery(limit=20_000))
            if len(page.items) == len(entities) and all(row.state is not None for row in page.items):
                break
            await asyncio.sleep(0.05)
        discovered_s = time.monotonic() - started
        rss = {name: rss_mib(processes[name].pid) for name in ("mqtt", "store")}

        stored, pushed = await changes(peers, site, api_port, config, rate, seconds, sample)
        return {"entities": len(entities), "discovered_s": discovered_s, "rss": rss, "rate": rate,
                "seconds": seconds, "stored": stored, "pushed": pushed,
                "rss_after": {name: rss_mib(processes[name].pid) for name in ("mqtt", "store")}}
    finally:
        site.close()
        await peers.close()
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            await asyncio.to_thread(process.wait, 30)


async def changes(peers: Peers, site: Publisher, api_port: int, config: Any, rate: int, seconds: float,
                  sample: int) -> tuple[list[float], list[float]]:
    from appliance.control.dispatcher import Dispatcher
    from appliance.control.table import default_table

    dispatcher = Dispatcher(default_table(), peers, config, __import__("logging").getLogger("bench"))
    token = dispatcher.accounts.authority.issue("access", "bench", Role.VIEWER, 3600).token
    sent_at: dict[str, float] = {}
    pushed: list[float] = []
    stored: list[float] = []
    pollers: list[asyncio.Task[None]] = []
    done = asyncio.Event()

    async def poll(entity_id: str, value: str, at: float) -> None:
        while True:
            with contextlib.suppress(IpcError):
                row = await peers.store.call(STORE_ENTITY, EntityKey(entity_id=entity_id))
                if row.state is not None and int(row.state) >= int(value):
                    stored.append(time.time() - at)
                    return
            await asyncio.sleep(0.005)

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") != "event" or frame.get("snapshot"):
                continue
            now = time.time()
            for row in frame["content"]["items"]:
                at = sent_at.pop(f"{row['entity_id']}={row['state']}", None)
                if at is not None:
                    pushed.append(now - at)
            if done.is_set() and not sent_at:
                return

    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{api_port}/control", headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.receive()
        await ws.send_json({"id": 1, "type": "subscribe", "topics": ["entities"]})
        listener = asyncio.create_task(listen(ws))
        total = int(rate * seconds)
        started, sent = time.monotonic(), 0
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - started)) + 1)
            for k in range(sent, due):
                n = k % SENSORS
                value = str(k + 1)
                at = time.time()
                sent_at[f"sensor.dev{n:04d}={value}"] = at
                site.publish(f"z2m{n % BRIDGES}/dev{n:04d}", json.dumps({"value": k + 1}))
                if k % sample == 0:
                    pollers.append(asyncio.create_task(poll(f"sensor.dev{n:04d}", value, at)))
            sent = due
            await asyncio.sleep(0.01)
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pollers), 60)
            await asyncio.wait_for(listener, 60)
        listener.cancel()
    return stored, pushed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "site-vm.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        broker, port = start_broker(Path(folder))
        try:
            result = asyncio.run(run(write_config(Path(folder), port), port, args.rate, args.seconds, args.sample))
        finally:
            broker.terminate()
    stored, pushed = result["stored"], result["pushed"]
    expected = int(args.rate * args.seconds)
    lines = [
        "# Site model under load (make bench-site)", "", f"Machine: {machine()}. One run, {time.strftime('%Y-%m-%d')}.",
        "Real mosquitto, store, mqtt and api processes; bench/site.py says how each number is taken.", "",
        "| measure | value |", "|---|---|",
        f"| entities discovered at once | {result['entities']:,} (1,000 sensors, 1,000 switches, 4 bridges) |",
        f"| mqtt start to registry complete (every entity stored with its state) | {result['discovered_s']:.2f} s |",
        f"| RSS then: mqtt / store | {result['rss']['mqtt']:.0f} / {result['rss']['store']:.0f} MiB |",
        f"| state changes sent | {expected:,} at {args.rate:,}/s for {args.seconds:g} s |",
        f"| publish to stored, sampled 1 in {args.sample} ({len(stored)} samples) | p50 "
        f"{percentile(stored, 0.5) * 1000:.0f} ms, p95 {percentile(stored, 0.95) * 1000:.0f} ms |",
        f"| publish to the /control entities topic ({len(pushed):,} of {expected:,} seen) | p50 "
        f"{percentile(pushed, 0.5) * 1000:.0f} ms, p95 {percentile(pushed, 0.95) * 1000:.0f} ms, "
        f"max {max(pushed, default=float('nan')) * 1000:.0f} ms |",
        f"| RSS after: mqtt / store | {result['rss_after']['mqtt']:.0f} / {result['rss_after']['store']:.0f} MiB |",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    sys.stdout.write(text)
    if stored:
        sys.stdout.write(f"stored mean {statistics.mean(stored) * 1000:.1f} ms\n")


if __name__ == "__main__":
    threading.stack_size(1 << 20)
    main()
