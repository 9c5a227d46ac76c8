"""make bench-mqtt: QoS 1 device events into the store, next to a raw subscriber in the same run.

One mosquitto on loopback (set up as docs/mqtt.md asks: no cap on queued or in-flight QoS 1
messages). Four `mosquitto_pub -l -q 1` processes (C, so the load costs little CPU), each one
device, publish JSON events, every one with its own id. Two consumers take the same loads, each
load on a fresh broker and a fresh consumer:

- raw: a paho-mqtt subscriber in its own process that acknowledges in the library and counts
  (the ceiling of the same MQTT library on this machine, doing nothing with what it gets);
- bridge: the real mqtt service with the real store process: parse, check the contract,
  batch, commit (events into memories, dedupe keys, the registry), then acknowledge.

Loads: a flood (EVENTS as fast as the publishers go: the sustained rate is EVENTS / the time
until the consumer has them all: the raw subscriber's count, the store's memory count), and
paced loads (a feeder writes lines into the publishers at a fixed rate for PACED_S seconds).
During every load a probe device publishes one event every PROBE_EVERY_S with a unique word and
the publish time; a probe's latency is, for the raw subscriber, publish -> received, and for the
bridge, publish -> found by a text search in the store (polled every 5 ms): event-to-searchable.
In a flood the latency is the backlog's (publishers outrun any consumer); the paced rows are the
latency of a box that keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from appliance.config import load_config
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.devices import STORE_DEVICES, DeviceQuery
from appliance.protocol.store import STORE_RECALL, RecallFilters, RecallRequest

HERE = Path(__file__).parent
PUBLISHERS = 4
PROBE_EVERY_S = 0.05
LOST_AFTER_S = 30.0  # a probe not searchable this long after it was sent counts as lost (where losses are counted)
RAW = """
import json, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, expected = int(sys.argv[1]), int(sys.argv[2])
count, latencies = [0], []
def on_message(client, userdata, message):
    if message.topic == "devices/probe/events":
        latencies.append(time.time() - json.loads(message.payload)["sent"])
    else:
        count[0] += 1
client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw", protocol=paho.MQTTv5)
client.on_message = on_message
client.on_connect = lambda c, *_: c.subscribe([("devices/+/events", 1)])
client.connect("127.0.0.1", port)
client.loop_start()
print("subscribed", flush=True)
while count[0] < expected:
    time.sleep(0.005)
done = time.time()
client.loop_stop()
print(json.dumps({"done": done, "latencies": latencies}), flush=True)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                                           "max_queued_messages 0\nmax_inflight_messages 0\n"
                                           + ("user root\n" if os.geteuid() == 0 else ""))
    process = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return process, port


def event_lines(publisher: int, count: int) -> Iterator[bytes]:
    for i in range(count):
        yield json.dumps({"id": f"{publisher}-{i}", "type": "reading", "value": i * 0.5}).encode() + b"\n"


def publishers(port: int) -> list[subprocess.Popen[bytes]]:
    """The publishers, each one device (mosquitto_pub -l publishes every line of its stdin on one topic)."""
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    return [subprocess.Popen([tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-M", "1000", "-l",
                              "-i", f"pub-{n}", "-t", f"devices/meter-{n}/events"], stdin=subprocess.PIPE)
            for n in range(PUBLISHERS)]


def feed(processes: list[subprocess.Popen[bytes]], events: int, rate: float | None) -> None:
    """Write ``events`` lines into the publishers: all at once (rate None), or ``rate`` a second in 10 ms steps."""
    per = events // len(processes)
    lines = [event_lines(n, per) for n in range(len(processes))]
    started, sent = time.monotonic(), 0
    while sent < per:
        due = per if rate is None else min(per, int(rate / len(processes) * (time.monotonic() - started)) + 1)
        for process, source in zip(processes, lines, strict=True):
            assert process.stdin is not None
            process.stdin.write(b"".join(itertools.islice(source, due - sent)))
            process.stdin.flush()
        sent = due
        if rate is not None:
            time.sleep(0.01)
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()


async def probes(port: int, stop: asyncio.Event, found: Peers | None, lost: list[str] | None = None) -> list[float]:
    """Publish a probe every PROBE_EVERY_S; with ``found`` (the store's peers), time each until searchable.
    Probes not searchable 60 s after the last was published fail the run, or with ``lost`` are put there.

    One probe is searched for at a time, the oldest not found yet, every 5 ms: probes come from one
    client, so the broker and the bridge keep them in order, and a search per pending probe would
    load the store with thousands of searches a second while a backlog drains.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="probe", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    latencies: list[float] = []
    pending: list[tuple[str, float]] = []
    published = asyncio.Event()

    async def publish_probes() -> None:
        while not stop.is_set():
            word = f"probe{uuid.uuid4().hex[:12]}"
            sent = time.time()
            client.publish("devices/probe/events", json.dumps({"type": word, "sent": sent, "value": 1}), qos=1)
            pending.append((word, sent))
            await asyncio.sleep(PROBE_EVERY_S)
        published.set()

    async def search_probes() -> None:
        assert found is not None
        deadline = None
        while not (published.is_set() and not pending):
            if pending:
                word, sent = pending[0]
                request = RecallRequest(query=word, mode="text", k=1, filters=RecallFilters(sources=["probe"]))
                with contextlib.suppress(IpcError):
                    if (await found.store.call(STORE_RECALL, request)).hits:
                        latencies.append(time.time() - sent)
                        pending.pop(0)
                        continue
                if lost is not None and time.time() - sent > LOST_AFTER_S:  # given up: the next one is looked for
                    lost.append(pending.pop(0)[0])
                    continue
            if published.is_set():
                deadline = deadline or time.monotonic() + 60
                if time.monotonic() > deadline:
                    if lost is None:
                        raise RuntimeError(f"{len(pending)} probes never became searchable")
                    lost.extend(word for word, _ in pending)
                    return
            await asyncio.sleep(0.005)

    try:
        if found is None:
            await publish_probes()
        else:
            await asyncio.gather(publish_probes(), search_probes())
    finally:
        client.loop_stop()
        client.disconnect()
    return latencies


@dataclass(frozen=True)
class Load:
    name: str
    events: int
    rate: float | None  # None: as fast as the publishers go


def run_raw(folder: Path, load: Load) -> dict[str, float]:
    process, port = broker(folder)
    raw = subprocess.Popen([sys.executable, "-c", RAW, str(port), str(load.events)], stdout=subprocess.PIPE,
                           text=True)
    try:
        assert raw.stdout is not None
        raw.stdout.readline()
        time.sleep(0.3)
        return asyncio.run(measure_raw(port, load, raw.stdout))
    finally:
        raw.kill()
        process.terminate()
        process.wait(5)


async def measure_raw(port: int, load: Load, report: IO[str]) -> dict[str, float]:
    stop = asyncio.Event()
    probing = asyncio.create_task(probes(port, stop, None))
    started = time.time()
    sending = publishers(port)
    feeding = asyncio.create_task(asyncio.to_thread(feed, sending, load.events, load.rate))
    line = await asyncio.to_thread(report.readline)
    stop.set()
    await probing
    await feeding
    for p in sending:
        await asyncio.to_thread(p.wait, 30)
    result = json.loads(line)
    return summary(load.events, result["done"] - started, result["latencies"])


def run_bridge(folder: Path, load: Load) -> dict[str, float]:
    process, port = broker(folder)
    try:
        with store_and_bridge(folder, port, "warning", device_rate_per_s=100_000, device_burst=1_000_000) as config:
            return asyncio.run(measure_bridge(config, port, load))
    finally:
        process.terminate()
        process.wait(5)


@contextlib.contextmanager
def store_and_bridge(folder: Path, port: int, log_level: str, **mqtt: Any) -> Iterator[Path]:
    """The store and the mqtt service as processes of a box in ``folder``, bridged to the broker on
    ``port`` (with these mqtt.* settings); yields the box's config file, and stops both after."""
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "bench", "home_assistant": {"enabled": False},
                 **mqtt},
        "logging": {"level": log_level},
    }))
    services = [subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", name])
                for name in ("store", "mqtt")]
    try:
        yield config_file
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(15)


async def measure_bridge(config_file: Path, port: int, load: Load) -> dict[str, float]:
    peers = Peers(load_config(config_file))
    try:
        for name in ("store", "mqtt"):
            await ready(peers, name)
        stop = asyncio.Event()
        probing = asyncio.create_task(probes(port, stop, peers))
        started = time.time()
        sending = publishers(port)
        feeding = asyncio.create_task(asyncio.to_thread(feed, sending, load.events, load.rate))
        # Polling the count is the measurement: the registry's counts of the publishers' devices
        # (primary-key reads; counting memories would cost the store more than the load itself).
        while await stored(peers) < load.events:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        done = time.time()
        stop.set()
        latencies = await probing
        await feeding
        for p in sending:
            await asyncio.to_thread(p.wait, 30)
        return summary(load.events, done - started, latencies)
    finally:
        await peers.close()


async def stored(peers: Peers) -> int:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(prefix="meter-"))
    return sum(device.event_count for device in page.items)


async def ready(peers: Peers, name: str) -> None:
    for _ in range(600):
        with contextlib.suppress(IpcError):
            if (await peers.client(name).call(HEALTH, timeout_s=1.0)).state is ServiceState.READY:  # type: ignore[arg-type]
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} never became ready")


def summary(events: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=20) if len(ms) >= 20 else [float("nan")] * 19
    return {"rate": events / seconds, "seconds": seconds, "probes": len(ms), "p50": statistics.median(ms) if ms
            else float("nan"), "p95": q[18], "max": ms[-1] if ms else float("nan")}


def main(events: int, rates: list[float], paced_s: float) -> None:
    loads = [Load(f"flood of {events:,}", events, None),
             *(Load(f"paced {rate:,.0f}/s for {paced_s:g} s", int(rate * paced_s), rate) for rate in rates)]
    rows: list[tuple[Load, dict[str, float], dict[str, float]]] = []
    for n, load in enumerate(loads):
        folder = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
        try:
            raw = run_raw(folder / f"raw-{n}", load)
            bridge = run_bridge(folder / f"bridge-{n}", load)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append((load, raw, bridge))
        print(load.name, raw, bridge, flush=True)
    write_table(rows)


def write_table(rows: list[tuple[Load, dict[str, float], dict[str, float]]]) -> None:
    lines = [f"# Device events over MQTT, QoS 1 ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}; broker, publishers and consumers on the same machine. "
             f"Command: `make bench-mqtt` (bench/mqtt.py): {PUBLISHERS} mosquitto_pub processes (QoS 1, 1000 in "
             f"flight each), one probe every {PROBE_EVERY_S * 1000:.0f} ms; one run. Latency: raw = publish -> "
             "received; bridge = publish -> found by a text search in the store (event-to-searchable).", "",
             "| load | consumer | events/s | of the ceiling | seconds | probes | p50 ms | p95 ms | max ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for load, raw, bridge in rows:
        for name, r in (("raw paho subscriber (ceiling)", raw), ("mqtt service + store, ack after commit", bridge)):
            lines.append(f"| {load.name} | {name} | {r['rate']:,.0f} | {r['rate'] / raw['rate']:.0%} | "
                         f"{r['seconds']:.1f} | {r['probes']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                         f"{r['max']:.1f} |")
    lines += ["", "In the flood the probes wait behind the backlog (the publishers outrun every consumer): its latency "
              "is queueing, not the pipeline. Goal (issue 13): >= 10,000 events/s with ack-after-commit, p95 "
              "event-to-searchable <= 100 ms.", ""]
    out = HERE / "results" / "mqtt-vm.md"
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events in the flood")
    parser.add_argument("--paced", default="5000,10000", help="rates of the paced loads, events/s")
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    arguments = parser.parse_args()
    main(arguments.events, [float(r) for r in arguments.paced.split(",") if r], arguments.paced_seconds)
