"""make bench-mqtt (second part): hostile publishers at full scale, on the box's default limits.

One mosquitto with the shipped settings (config/mosquitto/appliance.conf), the real store and mqtt
service on their defaults (50 events/s per device, burst 200, 64 KB payloads at most). For
HOSTILE_S seconds three publishers misbehave at once:

- flood: one device sends 100,000 QoS 1 events in the minute (1,667/s; mosquitto_pub -l, paced);
- big: one device sends payloads of BIG_BYTES (just under mqtt.max_payload_bytes) as fast as its
  PUBACKs come back (paho-mqtt, QoS 1);
- deaf: one client sends QoS 1 PUBLISH packets on a raw socket and never reads a byte (its PUBACKs
  pile up at the broker until its socket buffers fill).

A calm probe device publishes one event every PROBE_EVERY_S throughout (bench/mqtt.py's probes:
publish -> found by a text search in the store), first for QUIET_S seconds with no hostile load,
then during the hostile minute: its latency in the two phases is the "none starving the others"
measure. Afterwards: how long until everything acknowledged is stored, what was marked flood, and
what the bridge's and the store's health say.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from appliance.config import load_config
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH
from appliance.protocol.devices import STORE_DEVICES, DeviceQuery
from bench.mqtt import free_port, probes, ready, summary
from bench.soak import start_broker

HERE = Path(__file__).parent
HOSTILE_S = 60.0
QUIET_S = 20.0
FLOOD_EVENTS = 100_000
BIG_BYTES = 64 * 1024 - 200  # the JSON around it stays under mqtt.max_payload_bytes (65,536)
DRAIN_LIMIT_S = 900.0


class Big(threading.Thread):
    """A device sending BIG_BYTES payloads at QoS 1 as fast as the broker acknowledges them."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="big", protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop, self.sent, self.acked = stop, 0, 0

    def run(self) -> None:
        blob = "x" * BIG_BYTES
        while not self.stop.is_set():
            info = self.client.publish("devices/big/events", f'{{"id": {self.sent}, "type": "blob", "data": "{blob}"}}',
                                       qos=1)
            self.sent += 1
            info.wait_for_publish(timeout=60)
            self.acked += info.is_published()
        self.client.loop_stop()
        self.client.disconnect()


def _packet(kind: int, body: bytes) -> bytes:
    """An MQTT 3.1.1 control packet: fixed header (type and flags, remaining length), then the body."""
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([kind]) + encoded + body


def _string(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def deaf(port: int, stop: threading.Event, result: dict[str, Any]) -> None:
    """CONNECT, then QoS 1 PUBLISHes until told to stop, never reading: how many went out, and whether
    the broker closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_packet(0x10, _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _string("deaf")))
    sock.settimeout(1.0)
    sent, blocked_at = 0, None
    try:
        while not stop.is_set():
            payload = f'{{"id": {sent}, "type": "deaf", "value": 1}}'.encode()
            packet_id = sent % 65535 + 1
            try:
                sock.sendall(_packet(0x32, _string("devices/deaf/events") + struct.pack(">H", packet_id) + payload))
                sent += 1
            except TimeoutError:
                blocked_at = blocked_at or time.monotonic()
    except OSError as exc:
        result["closed"] = f"{type(exc).__name__} after {sent:,} publishes"
    finally:
        sock.close()
    result["sent"] = sent
    result["blocked"] = blocked_at is not None


def flood(port: int, events: int, seconds: float) -> subprocess.Popen[bytes]:
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    process = subprocess.Popen([tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-M", "1000", "-l", "-i", "flood",
                                "-t", "devices/flood/events"], stdin=subprocess.PIPE)

    def feed() -> None:
        assert process.stdin is not None
        started, sent = time.monotonic(), 0
        while sent < events:
            due = min(events, int(events * (time.monotonic() - started) / seconds) + 1)
            process.stdin.write(b"".join(b'{"id": "f-%d", "type": "reading", "value": %d}\n' % (i, i % 97)
                                         for i in range(sent, due)))
            process.stdin.flush()
            sent = due
            time.sleep(0.01)
        process.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    return process


async def counts(peers: Peers) -> dict[str, int]:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(limit=100))
    return {d.device_id: d.event_count for d in page.items}


async def measure(config_file: Path, port: int) -> dict[str, Any]:
    peers = Peers(load_config(config_file))
    try:
        for name in ("store", "mqtt"):
            await ready(peers, name)
        quiet_stop = asyncio.Event()
        quiet = asyncio.create_task(probes(port, quiet_stop, peers))
        await asyncio.sleep(QUIET_S)
        quiet_stop.set()
        quiet_ms = await quiet

        stop, hostile_stop = threading.Event(), asyncio.Event()
        deaf_result: dict[str, Any] = {}
        big = Big(port, stop)
        threading.Thread(target=deaf, args=(port, stop, deaf_result), daemon=True).start()
        started = time.monotonic()
        flooding = flood(port, FLOOD_EVENTS, HOSTILE_S)
        big.start()
        hostile = asyncio.create_task(probes(port, hostile_stop, peers))
        await asyncio.sleep(HOSTILE_S)
        stop.set()
        hostile_stop.set()
        await asyncio.to_thread(flooding.wait, 120)
        await asyncio.to_thread(big.join, 120)
        hostile_ms = await hostile
        while (now := await counts(peers)).get("flood", 0) < FLOOD_EVENTS or now.get("big", 0) < big.acked:
            if time.monotonic() - started > DRAIN_LIMIT_S:
                break
            await asyncio.sleep(0.5)
        drained_s = time.monotonic() - started
        return {"quiet": summary(1, 1, quiet_ms), "hostile": summary(1, 1, hostile_ms), "counts": now,
                "drained_s": drained_s, "big_sent": big.sent, "big_acked": big.acked, "deaf": deaf_result,
                "mqtt": (await peers.mqtt.call(HEALTH)).detail, "store": (await peers.store.call(HEALTH)).detail}
    finally:
        await peers.close()


def run() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    port = free_port()
    broker = start_broker(folder / "broker", port)
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "bench", "home_assistant": {"enabled": False}},
        "logging": {"level": "warning"}}))
    time.sleep(0.5)
    services = [subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config_file), "serve", name])
                for name in ("store", "mqtt")]
    try:
        return asyncio.run(measure(config_file, port))
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(15)
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def write(result: dict[str, Any]) -> None:
    c, deaf_result = result["counts"], result["deaf"]
    lines = [f"# Hostile MQTT publishers at full scale ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}; broker, publishers, box on the same machine. Command: `make bench-mqtt` "
             "(bench/mqtt_hostile.py), one run. The shipped broker settings and the box's default limits "
             "(50 events/s per device, burst 200, payloads up to 64 KB).", "",
             f"For {HOSTILE_S:.0f} s at once: a device sending {FLOOD_EVENTS:,} QoS 1 events "
             f"({FLOOD_EVENTS / HOSTILE_S:,.0f}/s); "
             f"a device sending {BIG_BYTES:,}-byte payloads as fast as its PUBACKs return; a client sending QoS 1 "
             "publishes on a raw socket that never reads. A calm device publishes an event every 50 ms throughout; "
             "its latency is publish -> found by a text search in the store.", "",
             "| phase | calm device's events | p50 ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for name, key in ((f"quiet ({QUIET_S:.0f} s, nothing else)", "quiet"), (f"hostile ({HOSTILE_S:.0f} s)", "hostile")):
        r = result[key]
        lines.append(f"| {name} | {r['probes']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} |")
    lines += ["", "| publisher | sent | acknowledged by the broker | stored |", "|---|---:|---:|---:|",
              f"| flood | {FLOOD_EVENTS:,} | {FLOOD_EVENTS:,} (mosquitto_pub exits once all are) | "
              f"{c.get('flood', 0):,} |",
              f"| big ({BIG_BYTES:,} B) | {result['big_sent']:,} | {result['big_acked']:,} | {c.get('big', 0):,} |",
              f"| deaf (never reads) | {deaf_result.get('sent', 0):,} written | unknown (never read) | "
              f"{c.get('deaf', 0):,} |", "",
              f"Everything acknowledged was stored {result['drained_s']:.0f} s after the hostile minute began. "
              "The deaf client's socket "
              f"{'blocked (its buffers full)' if deaf_result.get('blocked') else 'never blocked'}"
              f"{'; ' + deaf_result['closed'] if deaf_result.get('closed') else ''}.", "",
              f"The bridge's health afterwards: {result['mqtt']}", "", f"The store's: {result['store']}", ""]
    out = HERE / "results" / "mqtt-hostile-vm.md"
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    write(run())
